"""user_counts: exact user totals kept by triggers, so a page's `total` needs no COUNT(*) over the table

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Statement-level triggers with transition tables: a bulk insert or delete adjusts each count once.
STATEMENTS = (
    """
    CREATE FUNCTION accounts_count_added_users() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE user_counts SET users = users + added.n
        FROM (SELECT is_active, count(*) AS n FROM added_users GROUP BY is_active) AS added
        WHERE user_counts.is_active = added.is_active;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION accounts_count_removed_users() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE user_counts SET users = users - removed.n
        FROM (SELECT is_active, count(*) AS n FROM removed_users GROUP BY is_active) AS removed
        WHERE user_counts.is_active = removed.is_active;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION accounts_count_reset_users() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE user_counts SET users = 0;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION accounts_count_user_activation() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE user_counts SET users = users + CASE WHEN is_active = NEW.is_active THEN 1 ELSE -1 END;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER users_counted_insert AFTER INSERT ON users REFERENCING NEW TABLE AS added_users"
    " FOR EACH STATEMENT EXECUTE FUNCTION accounts_count_added_users()",
    "CREATE TRIGGER users_counted_delete AFTER DELETE ON users REFERENCING OLD TABLE AS removed_users"
    " FOR EACH STATEMENT EXECUTE FUNCTION accounts_count_removed_users()",
    "CREATE TRIGGER users_counted_truncate AFTER TRUNCATE ON users"
    " FOR EACH STATEMENT EXECUTE FUNCTION accounts_count_reset_users()",
    "CREATE TRIGGER users_counted_activation AFTER UPDATE OF is_active ON users FOR EACH ROW"
    " WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active) EXECUTE FUNCTION accounts_count_user_activation()",
)


def upgrade() -> None:
    op.create_table(
        "user_counts",
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("users", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("is_active", name=op.f("pk_user_counts")),
    )
    op.execute("LOCK TABLE users IN SHARE MODE")  # no write slips between the first count and the triggers
    op.execute(
        "INSERT INTO user_counts (is_active, users)"
        " SELECT flag, (SELECT count(*) FROM users WHERE is_active = flag) FROM (VALUES (true), (false)) AS f (flag)"
    )
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for trigger in ("insert", "delete", "truncate", "activation"):
        op.execute(f"DROP TRIGGER users_counted_{trigger} ON users")
    for function in ("added_users", "removed_users", "reset_users", "user_activation"):
        op.execute(f"DROP FUNCTION accounts_count_{function}()")
    op.drop_table("user_counts")
