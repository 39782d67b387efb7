"""service clients' public keys (private_key_jwt) and the client assertions already used

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# 0010's trigger, announcing a change of what a client's credentials can do: its keys are one of them now.
CLIENT_CREDENTIALS = "scopes, secret_hash, previous_secret_hash, previous_secret_expires_at"
KEYS = "jwks"


def _announce_changes_of(columns: str) -> None:
    op.execute("DROP TRIGGER oauth_clients_auth_changed ON oauth_clients")
    op.execute(
        f"CREATE TRIGGER oauth_clients_auth_changed AFTER UPDATE OF {columns} OR DELETE ON oauth_clients "
        "FOR EACH ROW EXECUTE FUNCTION accounts_notify_auth('oauth_clients')"
    )


def upgrade() -> None:
    op.add_column("oauth_clients", sa.Column("jwks", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    _announce_changes_of(f"{CLIENT_CREDENTIALS}, {KEYS}")
    op.create_table(
        "client_assertions",
        sa.Column("client_id", sa.GUID(length=16), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_client_assertions_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_client_assertions")),
    )
    op.create_index(op.f("ix_client_assertions_expires_at"), "client_assertions", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("client_assertions")
    _announce_changes_of(CLIENT_CREDENTIALS)
    op.drop_column("oauth_clients", "jwks")
