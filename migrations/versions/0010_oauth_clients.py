"""oauth clients and revoked access tokens, both announced on the credential cache's channel

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The columns whose change alters what a client's credentials can do (0002's function announces `table:id`).
CLIENT_CREDENTIALS = "scopes, secret_hash, previous_secret_hash, previous_secret_expires_at"
# A revocation is an insert: every worker adds the jti (and when the token expires anyway) to those it refuses.
NOTIFY_REVOKED = """
CREATE FUNCTION accounts_notify_revoked_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'accounts_auth', 'revoked_tokens:' || NEW.jti || ':' || extract(epoch FROM NEW.expires_at)::bigint
    );
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("previous_secret_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("secret_rotated_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_by", sa.GUID(length=16), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_oauth_clients_created_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_clients")),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"], unique=False)
    op.execute(
        f"CREATE TRIGGER oauth_clients_auth_changed AFTER UPDATE OF {CLIENT_CREDENTIALS} OR DELETE ON oauth_clients "
        "FOR EACH ROW EXECUTE FUNCTION accounts_notify_auth('oauth_clients')"
    )
    op.execute(
        "CREATE TRIGGER oauth_clients_auth_truncated AFTER TRUNCATE ON oauth_clients "
        "FOR EACH STATEMENT EXECUTE FUNCTION accounts_notify_auth('oauth_clients')"
    )
    op.execute(NOTIFY_REVOKED)
    op.execute(
        "CREATE TRIGGER revoked_tokens_added AFTER INSERT ON revoked_tokens "
        "FOR EACH ROW EXECUTE FUNCTION accounts_notify_revoked_token()"
    )


def downgrade() -> None:
    op.drop_table("revoked_tokens")
    op.execute("DROP FUNCTION accounts_notify_revoked_token()")
    op.drop_table("oauth_clients")
