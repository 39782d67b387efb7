"""events: the transactional feed and the audit trail

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A UUIDv7 made in SQL (PostgreSQL 15 has none), for the statements that write events without the ORM:
    # the first 48 bits are the time in milliseconds, the version nibble is 7, the rest random.
    op.execute(
        """
        CREATE FUNCTION accounts_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
            SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
                substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
        $$
        """
    )
    op.create_table(
        "events",
        sa.Column("id", sa.GUID(length=16), server_default=sa.text("accounts_uuid7()"), nullable=False),
        sa.Column("xid", sa.BigInteger(), server_default=sa.text("pg_current_xact_id()::text::bigint"), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column(
            "data", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("in_feed", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_feed", "events", ["xid", "seq"], unique=False, postgresql_where=sa.text("in_feed"))
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"], unique=False)
    op.create_index("ix_events_subject", "events", ["subject_type", "subject_id", "occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_subject", table_name="events")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_index("ix_events_feed", table_name="events", postgresql_where=sa.text("in_feed"))
    op.drop_table("events")
    op.execute("DROP FUNCTION accounts_uuid7()")
