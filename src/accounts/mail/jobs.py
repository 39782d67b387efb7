"""Sending the outbox's e-mails, and putting back on the queue what was not sent.

A request writes its e-mail into `outbox_messages` in the transaction of the change that causes it, then
tries to enqueue `send_email` (`enqueue_email`). If the queue is unreachable the request still succeeds:
`flush_outbox`, every minute, enqueues whatever has waited longer than OUTBOX_FLUSH_AFTER seconds. The SAQ key
is `email:<outbox id>`, so enqueueing a message twice runs it once.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg
import structlog
from saq import Job

from accounts.jobs.services import Jobs, WorkerContext
from accounts.mail.transport import compose, deliver

log = structlog.get_logger("accounts.mail")

SEND_TIMEOUT = 60
SEND_ATTEMPTS = 8
SEND_RETRY_DELAY = 5.0  # doubled after each failed attempt (with jitter), at most MAX_RETRY_DELAY
MAX_RETRY_DELAY = 600.0
ENQUEUE_TIMEOUT = 3.0
"""Seconds a request spends trying to enqueue; after that the outbox flush takes over."""
FLUSH_BATCH = 1000


def send_email_job(outbox_id: UUID | str) -> Job:
    return Job(
        function="send_email",
        kwargs={"outbox_id": str(outbox_id)},
        key=f"email:{outbox_id}",
        timeout=SEND_TIMEOUT,
        retries=SEND_ATTEMPTS,
        retry_delay=SEND_RETRY_DELAY,
        retry_backoff=MAX_RETRY_DELAY,
    )


async def enqueue_email(jobs: Jobs, outbox_id: UUID) -> None:
    """Put a written message on the queue; when that fails, log it and leave it to the outbox flush."""
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT):
            await jobs.connect()
            await jobs.queue.enqueue(send_email_job(outbox_id))
    except Exception as exc:  # noqa: BLE001 - whatever the queue raised, the message is safe in the outbox
        log.warning("e-mail not enqueued; the outbox flush will send it", outbox_id=str(outbox_id), error=repr(exc))


async def send_email(ctx: WorkerContext, *, outbox_id: str) -> str:
    """Send one outbox message, at most once: the row stays locked while it is sent, and a sent row is skipped.

    A crash between the SMTP server's acceptance and the commit can still send it twice (at least once
    is the promise); the Message-ID is the row's id, so a duplicate is recognisable."""
    settings = ctx["settings"]
    async with ctx["pool"].acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            "SELECT recipient, subject, body, expires_at <= now() AS expired FROM outbox_messages"
            " WHERE id = $1 AND sent_at IS NULL FOR UPDATE",
            UUID(outbox_id),
        )
        if row is None:
            return "already sent"
        if row["expired"]:
            return "expired"  # its link no longer works; the purge deletes it
        message = compose(
            settings, message_id=UUID(outbox_id), recipient=row["recipient"], subject=row["subject"], body=row["body"]
        )
        await deliver(settings, message)
        # The body holds a token: once sent, it is not kept.
        await connection.execute(
            "UPDATE outbox_messages SET sent_at = now(), body = NULL, updated_at = now() WHERE id = $1",
            UUID(outbox_id),
        )
    log.info("e-mail sent", outbox_id=outbox_id)
    return "sent"


async def flush_outbox(ctx: WorkerContext) -> int:
    """Enqueue the unsent, unexpired messages older than OUTBOX_FLUSH_AFTER seconds; returns how many."""
    records = await ctx["pool"].fetch(
        "SELECT id FROM outbox_messages WHERE sent_at IS NULL AND expires_at > now()"
        " AND created_at <= now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
        ctx["settings"].outbox_flush_after,
        FLUSH_BATCH,
    )
    queue = ctx["worker"].queue
    for record in records:
        await queue.enqueue(send_email_job(record["id"]))
    if records:
        log.info("outbox flushed", messages=len(records))
    return len(records)


async def purge_outbox(pool: asyncpg.Pool) -> int:
    """Delete sent messages after a week (kept, without their bodies, to show what went out) and unsent ones once
    they expire (their links no longer work); returns how many went."""
    status = await pool.execute(
        "DELETE FROM outbox_messages WHERE sent_at <= now() - interval '7 days'"
        " OR (sent_at IS NULL AND expires_at <= now())"
    )
    return int(status.rsplit(" ", 1)[-1])
