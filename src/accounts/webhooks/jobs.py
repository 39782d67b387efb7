"""Delivering webhooks: the dispatcher that turns feed events into deliveries, and the job that sends one.

The dispatcher (accounts.webhooks.dispatch) runs in every worker process. It wakes when an event commits (the
feed's notification) and every few seconds besides, reads the feed after its stored cursor, and writes a
delivery per (event, matching enabled endpoint) in the transaction that moves the cursor: an event becomes its
deliveries exactly once, and none is skipped. Each delivery then goes on the SAQ queue as
`deliver_webhook` jobs, one per attempt (key `webhook:<delivery>:<attempt>`, so enqueueing it twice runs it once).

An attempt holds a session advisory lock on the delivery, never a transaction, while it waits for the receiver
(an open transaction would hold the feed's horizon back). It is made only while no earlier delivery of the same
endpoint and subject is pending, so a subject's events arrive in feed order; when it ends, the next of its
subject is enqueued. A failed attempt is retried after an exponential back-off with full jitter until
WEBHOOK_RETRY_WINDOW has passed since the first, then the delivery has failed; WEBHOOK_MAX_CONSECUTIVE_FAILURES
failed deliveries in a row disable the endpoint (a `webhook.disabled` event). A periodic sweep enqueues what is
due and was not (a queue that was down, a worker killed mid-attempt).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import asyncpg
import httpx
import structlog
from saq import Job
from uuid_utils.compat import uuid7

from accounts.config import Settings
from accounts.events.context import SYSTEM
from accounts.events.services import Subject, record_on
from accounts.jobs.services import WorkerContext
from accounts.webhooks import urls
from accounts.webhooks.signing import signature_header

if TYPE_CHECKING:
    from accounts.webhooks.dispatch import WebhookRuntime

log = structlog.get_logger("accounts.webhooks")

RESPONSE_BODY_LIMIT = 64 * 1024
"""Bytes of a receiver's answer read at most; the rest is not waited for."""
RETRY_BASE = 1.0
"""Seconds of the first retry's back-off ceiling, doubled after each attempt, at most an eighth of the window."""
_LOCK_KEY = "hashtextextended('webhook:' || $1::text, 0)"
"""A delivery id as the bigint key of the advisory lock that one attempt at a time holds."""
USER_AGENT = "accounts-webhooks/1"
CHAIN_LIMIT = 100
"""Deliveries of one subject a job makes one after the other before it hands the rest to a job of their own."""


class WebhookContext(WorkerContext, total=False):
    """What the webhook tasks find in the worker's context besides the worker's own."""

    webhooks: WebhookRuntime


def deliver_job(delivery_id: UUID | str, attempt: int, settings: Settings, at: datetime | None = None) -> Job:
    """The job of one attempt (the `attempt`-th, from 0), run at `at` (now if None or past)."""
    return Job(
        function="deliver_webhook",
        kwargs={"delivery_id": str(delivery_id), "attempt": attempt},
        key=f"webhook:{delivery_id}:{attempt}",
        timeout=math.ceil(settings.webhook_timeout + urls.RESOLVE_TIMEOUT) + 10,
        retries=1,  # retries are the delivery's own (next_attempt_at), each a job of its own
        ttl=-1,  # forgotten once run: the delivery row is the record, and its key may be enqueued again
        scheduled=math.ceil(at.timestamp()) if at is not None and at.timestamp() > time.time() else 0,
    )


def batch_job(deliveries: list[tuple[UUID, int]], settings: Settings, concurrency: int) -> Job:
    """One job for the first attempts of many deliveries (the heads of one dispatch round): a job per delivery would
    cost the queue more than the deliveries cost."""
    rounds = math.ceil(len(deliveries) / concurrency)
    return Job(
        function="deliver_webhooks",
        kwargs={"deliveries": [[str(delivery_id), attempt] for delivery_id, attempt in deliveries]},
        key=f"webhooks:{uuid7()}",
        timeout=rounds * (math.ceil(settings.webhook_timeout + urls.RESOLVE_TIMEOUT) + 10),
        retries=1,  # an attempt lost with its worker is the sweep's: its delivery is still pending, and due
        ttl=-1,
    )


def backoff(attempts: int, window: int) -> float:
    """Full jitter: uniformly up to RETRY_BASE * 2^(attempts - 1), the ceiling at most an eighth of the window."""
    ceiling = min(RETRY_BASE * 2 ** min(attempts - 1, 30), max(window / 8, RETRY_BASE))
    return random.uniform(0, ceiling)  # noqa: S311 - spreading retries, not a secret


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How one attempt went."""

    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None


async def post(client: httpx.AsyncClient, settings: Settings, delivery: asyncpg.Record) -> Outcome:
    """POST the delivery's payload, signed, to its endpoint: the URL checked again (DNS may have changed) and the
    checked address connected to, no redirect followed, WEBHOOK_TIMEOUT for it all, the answer read up to
    RESPONSE_BODY_LIMIT. A 2xx is a success; anything else, a 3xx included, a failure."""
    started = time.monotonic()
    status_code: int | None = None
    try:
        async with asyncio.timeout(settings.webhook_timeout):
            target, address = await urls.check(delivery["url"], allow_private=settings.webhook_allow_private_urls)
            body = delivery["payload"].encode()
            message_id, timestamp = str(delivery["event_id"]), int(time.time())
            keys = [delivery["secret"], *([delivery["previous_secret"]] if delivery["overlapping"] else [])]
            headers = {
                "Host": target.host_header,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(keys, message_id, timestamp, body),
            }
            request = client.build_request(
                "POST",
                target.url_at(address),
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            )
            response = await client.send(request, stream=True)
            try:
                status_code = response.status_code
                answer = await _read_capped(response)
            finally:
                await response.aclose()
    except urls.UnsafeUrl as exc:
        return _outcome(started, None, f"Refused: {exc}")
    except TimeoutError:
        return _outcome(started, status_code, f"No answer within {settings.webhook_timeout:g} s.")
    except httpx.HTTPError as exc:
        return _outcome(started, status_code, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if 200 <= status_code < 300:
        return Outcome(ok=True, status_code=status_code, latency_ms=_ms(started), error=None)
    if 300 <= status_code < 400:
        location = response.headers.get("location", "")
        return _outcome(started, status_code, f"HTTP {status_code}: redirects are not followed ({location[:200]}).")
    return _outcome(started, status_code, f"HTTP {status_code}: {answer}" if answer else f"HTTP {status_code}")


async def _read_capped(response: httpx.Response) -> str:
    """The start of the answer, as one line: what the delivery log shows of a failure."""
    read = b""
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= RESPONSE_BODY_LIMIT:
            break
    return " ".join(read[:RESPONSE_BODY_LIMIT].decode(errors="replace").split())[:300]


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _outcome(started: float, status_code: int | None, error: str) -> Outcome:
    return Outcome(ok=False, status_code=status_code, latency_ms=_ms(started), error=error[:500])


_CLAIM = """
SELECT d.id, d.webhook_id, d.subject, d.event_id, d.payload, d.status, d.attempts, w.url, w.enabled, w.secret,
    w.previous_secret, coalesce(w.previous_secret_expires_at > now(), false) AS overlapping,
    EXISTS (SELECT 1 FROM webhook_deliveries AS e WHERE e.webhook_id = d.webhook_id AND e.subject = d.subject
        AND e.status = 'pending' AND e.sequence < d.sequence) AS behind
FROM webhook_deliveries AS d JOIN webhooks AS w ON w.id = d.webhook_id
WHERE d.id = $1
"""
# One statement (its own transaction): the delivery succeeded, and its endpoint's run of failures is over.
_SUCCEEDED = """
WITH delivered AS (
    UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1,
        first_attempt_at = coalesce(first_attempt_at, now()), last_attempt_at = now(), last_status_code = $3,
        last_latency_ms = $4, last_error = NULL, delivered_at = now(), next_attempt_at = NULL, updated_at = now()
    WHERE id = $1
)
UPDATE webhooks SET consecutive_failures = 0 WHERE id = $2 AND consecutive_failures <> 0
"""
# The window counts from the first attempt (a delivery waiting behind its subject's earlier one is not late); the
# last retry is at the window's end.
_FAILED = """
UPDATE webhook_deliveries SET attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, now()),
    last_attempt_at = now(), last_status_code = $2, last_latency_ms = $3, last_error = $4, updated_at = now(),
    status = CASE WHEN coalesce(first_attempt_at, now()) + $5::interval <= now() THEN 'failed' ELSE 'pending' END,
    next_attempt_at = CASE WHEN coalesce(first_attempt_at, now()) + $5::interval <= now() THEN NULL
        ELSE least(now() + $6::interval, coalesce(first_attempt_at, now()) + $5::interval) END
WHERE id = $1
RETURNING status, next_attempt_at
"""
# One statement, so concurrent failures count each once and only one of them disables the endpoint: the one whose
# update set disabled_at to this transaction's now().
_GAVE_UP = """
UPDATE webhooks SET consecutive_failures = consecutive_failures + 1,
    enabled = enabled AND consecutive_failures + 1 < $2,
    disabled_at = CASE WHEN enabled AND consecutive_failures + 1 >= $2 THEN now() ELSE disabled_at END
WHERE id = $1
RETURNING consecutive_failures, disabled_at IS NOT DISTINCT FROM now() AS disabled_now
"""
_NEXT_OF_SUBJECT = """
SELECT id, attempts, next_attempt_at FROM webhook_deliveries
WHERE webhook_id = $1 AND subject = $2 AND status = 'pending' ORDER BY sequence LIMIT 1
"""


async def deliver_webhook(ctx: WorkerContext, *, delivery_id: str, attempt: int) -> str:
    """Make the `attempt`-th attempt of a delivery, unless it is no longer that delivery's next one (done, or
    attempted already), its endpoint is disabled, or it waits behind an earlier delivery of its subject. Once it
    is done, the next delivery of its subject (if due) is attempted in the same job, up to CHAIN_LIMIT of them."""
    outcome, at = "", None
    for _ in range(CHAIN_LIMIT):
        outcome, following = await _attempt(ctx, delivery_id, attempt)
        if following is None:
            return outcome
        delivery_id, attempt, at = str(following["id"]), following["attempts"], following["next_attempt_at"]
        if at > datetime.now(UTC):
            break
    await ctx["worker"].queue.enqueue(deliver_job(delivery_id, attempt, ctx["settings"], at))
    return outcome


async def _attempt(ctx: WorkerContext, delivery_id: str, attempt: int) -> tuple[str, asyncpg.Record | None]:
    """One attempt (see `deliver_webhook`); returns how it went and, once the delivery is done, the next pending
    delivery of its subject."""
    runtime = cast("WebhookContext", ctx)["webhooks"]
    settings, queue = ctx["settings"], ctx["worker"].queue
    async with runtime.pool.acquire() as connection:
        if not await connection.fetchval(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", delivery_id):
            return "another attempt is running", None
        try:
            delivery = await connection.fetchrow(_CLAIM, UUID(delivery_id))
            if delivery is None or delivery["status"] != "pending" or delivery["attempts"] != attempt:
                return "not due", None
            if not delivery["enabled"]:
                return "endpoint disabled", None
            if delivery["behind"]:
                return "waiting for an earlier delivery of its subject", None
            outcome = await post(runtime.client, settings, delivery)
            retry_at = await _record(connection, settings, delivery, outcome)
        finally:
            await connection.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", delivery_id)
        if retry_at is not None:
            await queue.enqueue(deliver_job(delivery_id, attempt + 1, settings, retry_at))
            return f"failed ({outcome.error}); retrying", None
        following = await connection.fetchrow(_NEXT_OF_SUBJECT, delivery["webhook_id"], delivery["subject"])
    if not outcome.ok:
        log.warning("webhook delivery failed for good", delivery_id=delivery_id, error=outcome.error)
    return ("delivered" if outcome.ok else f"failed for good ({outcome.error})"), following


async def deliver_webhooks(ctx: WorkerContext, *, deliveries: list[list[Any]]) -> str:
    """`deliver_webhook` for each (delivery id, attempt), as many at once as the worker runs jobs."""
    limit = asyncio.Semaphore(ctx["worker"].concurrency)

    async def one(delivery_id: str, attempt: int) -> str:
        async with limit:
            return await deliver_webhook(ctx, delivery_id=delivery_id, attempt=attempt)

    outcomes = await asyncio.gather(*(one(delivery_id, attempt) for delivery_id, attempt in deliveries))
    return f"{outcomes.count('delivered')} of {len(outcomes)} delivered"


async def _record(
    connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
    settings: Settings,
    delivery: asyncpg.Record,
    outcome: Outcome,
) -> datetime | None:
    """Write how the attempt went; returns when to retry (None: it succeeded or failed for good)."""
    if outcome.ok:
        await connection.execute(
            _SUCCEEDED, delivery["id"], delivery["webhook_id"], outcome.status_code, outcome.latency_ms
        )
        return None
    async with connection.transaction():
        window = settings.webhook_retry_window
        failed = await connection.fetchrow(
            _FAILED,
            delivery["id"],
            outcome.status_code,
            outcome.latency_ms,
            outcome.error,
            _seconds(window),
            _seconds(backoff(delivery["attempts"] + 1, window)),
        )
        if failed is None:  # the endpoint was deleted meanwhile, its deliveries with it
            return None
        if failed["status"] == "pending":
            return cast("datetime", failed["next_attempt_at"])
        endpoint = await connection.fetchrow(
            _GAVE_UP, delivery["webhook_id"], settings.webhook_max_consecutive_failures
        )
        if endpoint is not None and endpoint["disabled_now"]:
            failures = endpoint["consecutive_failures"]
            log.warning("webhook endpoint disabled", webhook_id=str(delivery["webhook_id"]), failures=failures)
            subject = Subject("webhook", delivery["webhook_id"])
            await record_on(connection, "webhook.disabled", subject, {"failures": failures}, actor=SYSTEM)
        return None


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


DELIVERY_LOG_DAYS = 30
"""Days a finished delivery stays in its endpoint's log (GET /api/v1/webhooks/{id}/deliveries)."""


async def purge_deliveries(pool: asyncpg.Pool) -> int:
    """Delete the deliveries that ended (delivered or failed for good) more than DELIVERY_LOG_DAYS ago."""
    status = await pool.execute(
        "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < now() - make_interval(days => $1)",
        DELIVERY_LOG_DAYS,
    )
    return int(status.rsplit(" ", 1)[-1])
