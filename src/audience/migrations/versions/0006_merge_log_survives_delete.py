"""merges: the merge log survives deleting a user (user ids set to NULL, not cascaded)

Deleting a user used to delete every merge it took part in, so the log lost its history and an
undo of such a merge answered 404. The user ids are now nullable with ON DELETE SET NULL: the
merge stays listed, and undoing it is a 409. SQLite can't alter a foreign key, so batch mode
rebuilds the table there; on PostgreSQL the constraints are altered in place.

The indexes now lead with the user id instead of the environment: a foreign key action (the
old cascade as much as the new SET NULL) looks rows up by the user id alone, and without such
an index both databases scanned the whole merge log once per deleted user.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:00:00.000000
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_COLUMNS = ("from_user_id", "into_user_id")


def _alter(*, nullable: bool, ondelete: str, by_environment: bool) -> None:
    with warnings.catch_warnings(), op.batch_alter_table("merges", schema=None) as batch_op:
        # SQLite's rebuild reflects `users` (the foreign keys' target) and can't read its
        # expression index; only merges is rebuilt, so that is harmless.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        for column in _COLUMNS:
            name = f"fk_merges_{column}_users"
            batch_op.drop_constraint(name, type_="foreignkey")
            batch_op.alter_column(column, existing_type=_ID, nullable=nullable)
            batch_op.create_foreign_key(name, "users", [column], ["id"], ondelete=ondelete)
            old, new = f"ix_merges_environment_id_{column}", f"ix_merges_{column}"
            if by_environment:
                batch_op.drop_index(new)
                batch_op.create_index(old, ["environment_id", column])
            else:
                batch_op.drop_index(old)
                batch_op.create_index(new, [column])


def upgrade() -> None:
    _alter(nullable=True, ondelete="SET NULL", by_environment=False)


def downgrade() -> None:
    # Merges whose user was deleted can't satisfy NOT NULL: they go, as they did before.
    op.execute(sa.text("DELETE FROM merges WHERE from_user_id IS NULL OR into_user_id IS NULL"))
    _alter(nullable=False, ondelete="CASCADE", by_environment=True)
