"""PostgreSQL: the btree_gin extension, for the combined index of saved segments' attributes

`segments.indexes` builds one GIN index over the custom attributes saved segments filter on,
which lets PostgreSQL intersect several conditions in one index scan; GIN over plain values
needs btree_gin (shipped with PostgreSQL, a trusted extension since 13). Without the right to
create it, the migration goes on and audience keeps to its single-attribute indexes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 23:15:00.000000
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    with op.get_context().autocommit_block():  # a refusal must not abort the migration
        try:
            op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        except sa.exc.DBAPIError as error:
            logging.getLogger("audience.migrations").warning(
                "btree_gin not installed (%s): saved segments get single-attribute indexes only",
                error.orig,
            )


def downgrade() -> None:
    pass  # other databases' objects may use the extension: it stays
