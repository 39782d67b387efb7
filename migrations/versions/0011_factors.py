"""second factors (TOTP, recovery codes), login challenges and sessions

Every existing refresh-token family becomes a session (logged in with a password), so the tokens issued before the
upgrade keep working and show up in the session list.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# An ended session: every worker refuses its access tokens (the `sid` claim) from now on.
NOTIFY_SESSION_ENDED = """
CREATE FUNCTION accounts_notify_session_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'accounts_auth', 'sessions:' || NEW.id || ':' || extract(epoch FROM NEW.revoked_at)::bigint
    );
    RETURN NULL;
END
$$
"""
BACKFILL_SESSIONS = """
INSERT INTO sessions (id, user_id, amr, last_used_at, revoked_at, created_at, updated_at)
SELECT family_id, user_id, '{pwd}', max(coalesce(used_at, created_at)),
       CASE WHEN bool_and(revoked_at IS NOT NULL) THEN max(revoked_at) END, min(created_at), now()
FROM refresh_tokens GROUP BY family_id, user_id
"""


def _audit_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
    ]


def _user_column(table: str) -> tuple[sa.Column[object], sa.ForeignKeyConstraint]:
    return sa.Column("user_id", sa.GUID(length=16), nullable=False), sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "totp_factors",
        sa.Column("user_id", sa.GUID(length=16), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(length=64), nullable=False),
        sa.Column("confirmed_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_totp_factors_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_totp_factors")),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        *_user_column("recovery_codes"),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("used_at", sa.DateTimeUTC(timezone=True), nullable=True),
        *_audit_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
    )
    op.create_index(op.f("ix_recovery_codes_user_id"), "recovery_codes", ["user_id"], unique=False)
    op.create_table(
        "mfa_challenges",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        *_user_column("mfa_challenges"),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("amr", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTimeUTC(timezone=True), nullable=True),
        *_audit_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_challenges")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_mfa_challenges_token_hash")),
    )
    op.create_index(op.f("ix_mfa_challenges_user_id"), "mfa_challenges", ["user_id"], unique=False)
    op.create_index(op.f("ix_mfa_challenges_expires_at"), "mfa_challenges", ["expires_at"], unique=False)
    op.create_table(
        "sessions",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        *_user_column("sessions"),
        sa.Column("amr", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("last_used_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTimeUTC(timezone=True), nullable=True),
        *_audit_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"], unique=False)
    op.create_index(op.f("ix_sessions_revoked_at"), "sessions", ["revoked_at"], unique=False)
    op.execute(BACKFILL_SESSIONS)
    op.create_foreign_key(
        op.f("fk_refresh_tokens_family_id_sessions"),
        "refresh_tokens",
        "sessions",
        ["family_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.execute(NOTIFY_SESSION_ENDED)
    op.execute(
        "CREATE TRIGGER sessions_ended AFTER UPDATE OF revoked_at ON sessions FOR EACH ROW "
        "WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL) EXECUTE FUNCTION accounts_notify_session_ended()"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_refresh_tokens_family_id_sessions"), "refresh_tokens", type_="foreignkey")
    op.drop_table("sessions")
    op.execute("DROP FUNCTION accounts_notify_session_ended()")
    op.drop_table("mfa_challenges")
    op.drop_table("recovery_codes")
    op.drop_table("totp_factors")
