"""events: the (environment, name, timestamp) index also holds user_id

Behaviour conditions ("did Purchased at least 3 times in 30 days") group one event name's rows
in a time window by user; with user_id in the index both databases answer from the index alone
instead of reading every matching event row. It replaces the old index rather than adding one,
so ingestion maintains no more indexes than before.

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

_NEW = "ix_events_environment_id_name_timestamp_user_id"
_OLD = "ix_events_environment_id_name_timestamp"


def _swap(create: str, columns: list[str], drop: str) -> None:
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
    _swap(_NEW, ["environment_id", "name", "timestamp", "user_id"], _OLD)


def downgrade() -> None:
    _swap(_OLD, ["environment_id", "name", "timestamp"], _NEW)
