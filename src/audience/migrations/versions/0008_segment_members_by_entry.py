"""segment_memberships: current members by time of entry, for a segment's member list

`GET /segments/{id}/members` lists the current members, most recent entries first: a walk of
this partial index (current stays only) and one user row per member shown, whatever the sizes
of the segment and of the users table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_NAME = "ix_segment_memberships_current_segment_id_entered_at"
_COLUMNS = ["segment_id", "entered_at", "user_id"]
_CURRENT = sa.text("exited_at IS NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # CONCURRENTLY: membership keeps changing while the index builds.
        with op.get_context().autocommit_block():
            op.create_index(
                _NAME,
                "segment_memberships",
                _COLUMNS,
                postgresql_where=_CURRENT,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        return
    op.create_index(_NAME, "segment_memberships", _COLUMNS, sqlite_where=_CURRENT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(
                _NAME,
                table_name="segment_memberships",
                postgresql_concurrently=True,
                if_exists=True,
            )
        return
    op.drop_index(_NAME, table_name="segment_memberships")
