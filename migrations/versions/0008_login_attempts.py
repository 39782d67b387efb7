"""login_failures.pending: attempts counted before their secret is checked, so concurrent guesses stay bounded

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A default, so the release before (which does not know the column) keeps inserting rows during a rollout.
    op.add_column("login_failures", sa.Column("pending", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    op.drop_column("login_failures", "pending")
