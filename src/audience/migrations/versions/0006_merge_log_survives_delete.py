"""placeholder revision, filled in by the merge-log change (kept so the chain stays linear)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:00:00.000000
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
