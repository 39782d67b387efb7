"""email: users.email_verified_at, the e-mailed single-use tokens, and the outbox of e-mails to send

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email_verified_at", sa.DateTimeUTC(timezone=True), nullable=True))
    # A trigger, not the code paths that write: whoever changes an address, it is unverified again.
    op.execute(
        """
        CREATE FUNCTION accounts_unverify_changed_email() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.email IS DISTINCT FROM OLD.email THEN
                NEW.email_verified_at := NULL;
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_email_unverified BEFORE UPDATE OF email ON users"
        " FOR EACH ROW EXECUTE FUNCTION accounts_unverify_changed_email()"
    )
    op.create_table(
        "email_tokens",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("user_id", sa.GUID(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_email_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_tokens_token_hash")),
    )
    op.create_index(op.f("ix_email_tokens_user_id"), "email_tokens", ["user_id"], unique=False)
    op.create_index("ix_email_tokens_expires_at", "email_tokens", ["expires_at"], unique=False)
    op.create_index(
        "ux_email_tokens_open_reset",
        "email_tokens",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("purpose = 'reset' AND used_at IS NULL"),
    )
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_messages")),
    )
    op.create_index(
        "ix_outbox_messages_unsent",
        "outbox_messages",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_index("ix_outbox_messages_sent_at", "outbox_messages", ["sent_at"], unique=False)
    op.create_index("ix_outbox_messages_expires_at", "outbox_messages", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_messages_expires_at", table_name="outbox_messages")
    op.drop_index("ix_outbox_messages_sent_at", table_name="outbox_messages")
    op.drop_index("ix_outbox_messages_unsent", table_name="outbox_messages")
    op.drop_table("outbox_messages")
    op.drop_index("ux_email_tokens_open_reset", table_name="email_tokens")
    op.drop_index("ix_email_tokens_expires_at", table_name="email_tokens")
    op.drop_index(op.f("ix_email_tokens_user_id"), table_name="email_tokens")
    op.drop_table("email_tokens")
    op.execute("DROP TRIGGER users_email_unverified ON users")
    op.execute("DROP FUNCTION accounts_unverify_changed_email()")
    op.drop_column("users", "email_verified_at")
