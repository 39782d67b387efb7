"""Outgoing e-mail: through an SMTP server (SMTP_HOST), or, by default, as .eml files in DATA_DIR/mail.

Messages are written by the request that causes them into the outbox (accounts.mail.outbox) and sent from
there by a worker task (accounts.mail.jobs.send_email), which calls `deliver`.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from uuid import UUID

import aiosmtplib

from accounts.config import Settings

SMTP_TIMEOUT = 30.0
"""Seconds for each step of an SMTP conversation; the task's own timeout is above it."""


def compose(settings: Settings, *, message_id: UUID, recipient: str, subject: str, body: str) -> EmailMessage:
    """A plain-text message; its Message-ID comes from the outbox row, so a resent duplicate is recognisable."""
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<{message_id}@accounts.invalid>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    message.set_content(body)
    return message


async def deliver(settings: Settings, message: EmailMessage) -> None:
    """Send `message` through SMTP_HOST, or write it into DATA_DIR/mail when no SMTP server is configured."""
    if settings.smtp_host is None:
        await asyncio.to_thread(_write_eml, settings.data_path / "mail", message)
        return
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        use_tls=settings.smtp_tls == "tls",
        start_tls=settings.smtp_tls == "starttls",
        timeout=SMTP_TIMEOUT,
    )


def _write_eml(folder: Path, message: EmailMessage) -> None:
    """Write atomically (a temporary name, then rename), so a reader never sees half a message."""
    folder.mkdir(parents=True, exist_ok=True)
    name = str(message["Message-ID"]).strip("<>").split("@", 1)[0]  # the outbox row's id
    final = folder / f"{name}.eml"
    partial = folder / f".{name}.eml.tmp"
    partial.write_bytes(message.as_bytes())
    os.replace(partial, final)
