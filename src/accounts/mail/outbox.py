"""Writing e-mails into the outbox, in the caller's transaction: the e-mail leaves if and only if the change
that causes it is committed. After the commit the caller enqueues it (`enqueue_email`, accounts.mail.jobs);
should that fail, the minutely flush picks it up."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.mail.models import OutboxMessage


class Outbox:
    """The outbox, on one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def write(self, *, kind: str, recipient: str, subject: str, body: str, expires_at: datetime) -> UUID:
        """Write one e-mail, sent unless it expires first (its link would no longer work); returns its id."""
        message = OutboxMessage(kind=kind, recipient=recipient, subject=subject, body=body, expires_at=expires_at)
        self.session.add(message)
        await self.session.flush()
        return message.id
