"""segments: saved filters and their live membership

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 19:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import audience.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", _ID, nullable=False),
        sa.Column("environment_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("time_relative", sa.Boolean(), nullable=False),
        sa.Column("created_at", audience.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", audience.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_segments_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("environment_id", "name", name=op.f("uq_segments_environment_id_name")),
    )
    op.create_table(
        "segment_memberships",
        sa.Column("id", _ID, nullable=False),
        sa.Column("segment_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("entered_at", audience.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("exited_at", audience.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_memberships_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_segment_memberships_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_memberships")),
    )
    with op.batch_alter_table("segment_memberships", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_memberships_segment_id_exited_at_user_id",
            ["segment_id", "exited_at", "user_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_segment_memberships_user_id_exited_at", ["user_id", "exited_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("segment_memberships")
    op.drop_table("segments")
