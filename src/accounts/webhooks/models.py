"""The webhook tables: endpoints, one delivery per (event, endpoint), and the dispatcher's place in the feed."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, ForeignKey, Identity, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base


class Webhook(Base):
    """An endpoint that receives the events whose types match `event_types` (exact types, `user.*`, or `*`).

    Its signing key is kept as it is (HMAC needs it; only the `whsec_` text shown once is ever handed out); during
    a rotation the previous key signs too, until `previous_secret_expires_at`."""

    __tablename__ = "webhooks"

    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    description: Mapped[str] = mapped_column(String(500), default="")
    secret: Mapped[bytes] = mapped_column(LargeBinary(64))
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary(64))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    """Deliveries that failed for good since the last successful attempt; at WEBHOOK_MAX_CONSECUTIVE_FAILURES the
    endpoint is disabled."""
    created_by: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class WebhookDelivery(Base):
    """One event for one endpoint, and how its attempts went. `sequence` is the dispatch order, which is the feed
    order: a delivery waits while an earlier one of the same endpoint and subject is pending."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("uq_webhook_deliveries_event", "webhook_id", "event_id", unique=True),
        Index("ix_webhook_deliveries_log", "webhook_id", "sequence"),
        Index(
            "ix_webhook_deliveries_pending",
            "webhook_id",
            "subject",
            "sequence",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )

    webhook_id: Mapped[UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(BigInteger, Identity())
    event_id: Mapped[UUID]
    event_type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(100))
    """`<subject type>:<subject id>`: the events whose order is kept."""
    payload: Mapped[str] = mapped_column(Text)
    """The body sent, the event as the feed shows it, kept as the exact bytes signed at every attempt."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """`pending` (to be tried, or waiting behind an earlier one), `succeeded` or `failed` (its retry window ran out)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class WebhookDispatch(Base):
    """The dispatcher's one row: the feed cursor up to which events have become deliveries. It moves in the
    transaction that writes those deliveries, under the dispatchers' lock, so no event is skipped or dispatched
    twice."""

    __tablename__ = "webhook_dispatch"

    cursor: Mapped[str | None] = mapped_column(String(200))
