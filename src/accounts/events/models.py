"""The events table: one row per change, written in the change's transaction (accounts.events.services)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, Identity, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

XID = text("pg_current_xact_id()::text::bigint")
"""The writing transaction's 64-bit id (xid8, epoch included, so it never wraps), as a bigint."""


class Event(UUIDv7Base):
    """A change, recorded in the transaction that made it: committed with it or not at all.

    `(xid, seq)` is its place in the feed: a reader returns only rows whose xid is below the oldest transaction
    still running (`pg_snapshot_xmin`), so a row that commits late is never behind a cursor already handed out.
    `occurred_at` stands for `created_at` (an event never changes, so there is no `updated_at`); `id` also has a
    server default (`accounts_uuid7()`, migration 0013) for the statements that write events straight in SQL."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_feed", "xid", "seq", postgresql_where=text("in_feed")),
        Index("ix_events_occurred_at", "occurred_at"),
        Index("ix_events_subject", "subject_type", "subject_id", "occurred_at"),
    )

    xid: Mapped[int] = mapped_column(BigInteger, server_default=XID)
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    in_feed: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    """False for audit-only events (logins): in the audit trail, never in the feed, streams or webhooks."""
