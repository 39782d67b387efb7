"""users.version: bumped by a trigger on every update, the source of a user's ETag

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))
    # A trigger, not the code paths that write: every update bumps it, whoever makes it.
    op.execute(
        """
        CREATE FUNCTION accounts_bump_user_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.version := OLD.version + 1;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_versioned BEFORE UPDATE ON users"
        " FOR EACH ROW EXECUTE FUNCTION accounts_bump_user_version()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER users_versioned ON users")
    op.execute("DROP FUNCTION accounts_bump_user_version()")
    op.drop_column("users", "version")
