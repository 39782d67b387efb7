"""The outbox: e-mails written in the transaction of the change that causes them, sent from there by a job."""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base


class OutboxMessage(Base):
    """An e-mail written in the transaction of the change that causes it, sent by the `send_email` task.

    The body (which holds a token) is cleared once the message is sent; unsent rows go when they expire."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        Index("ix_outbox_messages_unsent", "created_at", postgresql_where=text("sent_at IS NULL")),
        Index("ix_outbox_messages_sent_at", "sent_at"),
        Index("ix_outbox_messages_expires_at", "expires_at"),
    )

    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
