"""processed_messages: a partial index of the rows with warnings, newest first

`GET /api/v1/message-warnings` lists an environment's processed messages that have warnings,
newest first, paged by (processed_at, message_id). Most processed messages (every identify,
group and alias) have none, so the index holds only the rows with warnings: the listing, its
count and its cursor read this index alone, and ingestion maintains it only for the rare row
with a warning. `warnings != '[]'` means the same on both databases (JSONB on PostgreSQL, JSON
text on SQLite, where the processor always writes an empty list as `[]`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_NAME = "ix_processed_messages_warned"
_WHERE = sa.text("warnings != '[]'")


def upgrade() -> None:
    columns = ["environment_id", "processed_at", "message_id"]
    if op.get_bind().dialect.name == "postgresql":
        # CONCURRENTLY: a large processed_messages table keeps taking writes while it builds.
        with op.get_context().autocommit_block():
            op.create_index(
                _NAME,
                "processed_messages",
                columns,
                postgresql_where=_WHERE,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        return
    op.create_index(_NAME, "processed_messages", columns, sqlite_where=_WHERE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(
                _NAME,
                table_name="processed_messages",
                postgresql_concurrently=True,
                if_exists=True,
            )
        return
    op.drop_index(_NAME, table_name="processed_messages")
