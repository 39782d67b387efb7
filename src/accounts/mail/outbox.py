"""Writing e-mails into the outbox, in the caller's transaction: the e-mail leaves if and only if the change
that causes it is committed. After the commit the caller enqueues it (`enqueue_email`, accounts.mail.jobs);
should that fail, the minutely flush picks it up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.mail.models import OutboxMessage

NOTICE_TTL = 7 * 86_400
"""Seconds a security notice may wait in the outbox: later it is old news."""


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

    async def write_notice(self, recipient: str, subject: str, what: str) -> UUID:
        """Write a security notice: something changed about the account's sign-in (a factor added or removed, the
        password changed, a login from a new device), so that its owner hears of what they did not do."""
        body = (
            f"Hello,\n\n{what}\n\nIf this was you, there is nothing to do. If it was not, reset your password now"
            " and tell your administrator.\n"
        )
        expires_at = datetime.now(UTC) + timedelta(seconds=NOTICE_TTL)
        return await self.write(
            kind="security_notice", recipient=recipient, subject=subject, body=body, expires_at=expires_at
        )
