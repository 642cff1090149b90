"""events: indexes for behaviour conditions and for deleting users

- `(environment_id, name, timestamp)` also holds `user_id`: behaviour conditions ("did Purchased
  at least 3 times in 30 days") group one event name's rows in a time window by user, and with
  user_id in the index both databases answer from the index alone.
- `(environment_id, user_id, timestamp)` becomes `(user_id, timestamp)`: deleting a user cascades
  to its events by `user_id` alone, which an index led by environment_id can't serve (every
  delete read the whole table). User ids are unique across environments, so the per-user
  queries are served as before.

Each replaces an index rather than adding one: ingestion maintains no more than before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 22:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BY_NAME = ["environment_id", "name", "timestamp"]
_BY_USER = ["environment_id", "user_id", "timestamp"]
# (old name, old columns, new name, new columns)
_SWAPS = [
    (
        "ix_events_environment_id_name_timestamp",
        _BY_NAME,
        "ix_events_environment_id_name_timestamp_user_id",
        [*_BY_NAME, "user_id"],
    ),
    (
        "ix_events_environment_id_user_id_timestamp",
        _BY_USER,
        "ix_events_user_id_timestamp",
        ["user_id", "timestamp"],
    ),
]


def _swap(drop: str, create: str, columns: list[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # CONCURRENTLY: a large events table keeps taking writes while the index builds.
        with op.get_context().autocommit_block():
            op.create_index(
                create, "events", columns, postgresql_concurrently=True, if_not_exists=True
            )
            op.drop_index(drop, table_name="events", postgresql_concurrently=True, if_exists=True)
        return
    op.create_index(create, "events", columns)
    op.drop_index(drop, table_name="events")


def upgrade() -> None:
    for old, _, new, columns in _SWAPS:
        _swap(old, new, columns)


def downgrade() -> None:
    for old, old_columns, new, _ in _SWAPS:
        _swap(new, old, old_columns)
