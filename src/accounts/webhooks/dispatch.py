"""The webhook dispatcher: feed events become deliveries, exactly once each, and due deliveries go on the queue.

One runs in every worker process (`WebhookRuntime`, started by the worker); they take turns on a session
advisory lock, under which a page of the feed after the cursor (the one `webhook_dispatch` row) becomes delivery
rows and the cursor moves, in one transaction: an event becomes its deliveries exactly once, and none is skipped.
A dispatcher wakes on each commit of events (the feed's notification), on `WAKE_CHANNEL` (a redelivery, an
endpoint enabled again), and every SWEEP_INTERVAL seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import msgspec
import structlog
from asyncpg.pool import PoolConnectionProxy
from saq import Queue
from uuid_utils.compat import uuid7

from accounts.config import Settings
from accounts.events.services import START, EventFeed, Position
from accounts.jobs.services import WorkerContext
from accounts.webhooks.jobs import WebhookContext, batch_job, deliver_job
from accounts.webhooks.services import WAKE_CHANNEL, matches

log = structlog.get_logger("accounts.webhooks")

EVENTS_CHANNEL = "accounts_events"
"""The feed's notification on each commit of events (migration 0013); its payload is the writer's xid."""
DISPATCH_PAGE = 500
BATCH = 100
"""Deliveries at most in one `deliver_webhooks` job."""
SWEEP_INTERVAL = 5.0
"""Seconds between the dispatcher's runs when nothing wakes it, each with a sweep of what is overdue."""
SWEEP_OVERDUE = 2.0
"""A due delivery is swept onto the queue once it is this many seconds late (before that, its job is on its way)."""
SWEEP_BATCH = 1000
BEHIND_HORIZON_RETRY = 0.02
"""Seconds before the feed is read again while a notified event is still behind the horizon (an older
transaction is open)."""
COALESCE_SECONDS = 0.01
"""Seconds a woken dispatcher waits before reading, so that a burst of commits becomes one round, not one each."""
DISPATCH_ROW = UUID(int=0)
_DISPATCH_LOCK = "hashtextextended('webhook dispatch', 0)"

_INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, subject, payload, status, attempts,
    next_attempt_at, created_at, updated_at)
SELECT row.id, row.webhook_id, row.event_id, row.event_type, row.subject, row.payload, 'pending', 0, now(), now(),
    now()
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[])
    WITH ORDINALITY AS row (id, webhook_id, event_id, event_type, subject, payload, n)
ORDER BY row.n
ON CONFLICT (webhook_id, event_id) DO NOTHING
RETURNING id
"""
# The head of each subject's line among `ids`: a delivery behind a pending one of its subject is enqueued when
# that one ends (accounts.webhooks.jobs.deliver_webhook).
_HEADS = """
SELECT d.id, d.attempts, d.next_attempt_at FROM webhook_deliveries AS d
WHERE d.id = ANY($1::uuid[]) AND d.status = 'pending' AND NOT EXISTS (
    SELECT 1 FROM webhook_deliveries AS e WHERE e.webhook_id = d.webhook_id AND e.subject = d.subject
    AND e.status = 'pending' AND e.sequence < d.sequence)
"""
_OVERDUE = """
SELECT d.id, d.attempts, d.next_attempt_at FROM webhook_deliveries AS d JOIN webhooks AS w ON w.id = d.webhook_id
WHERE d.status = 'pending' AND w.enabled AND d.next_attempt_at <= now() - $1::float8 * interval '1 second'
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS e WHERE e.webhook_id = d.webhook_id AND e.subject = d.subject
        AND e.status = 'pending' AND e.sequence < d.sequence)
ORDER BY d.next_attempt_at LIMIT $2
"""


class Dispatcher:
    """Turns the feed into deliveries and puts due deliveries on the queue."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, queue: Queue, concurrency: int) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.pool = pool
        self.queue = queue
        self.feed = EventFeed(pool)

    async def dispatch(self) -> Position:
        """Turn the feed after the cursor into deliveries, page after page, and enqueue those at the head of their
        subject's line; returns where the cursor is now."""
        while True:
            created, position, full = await self._dispatch_page()
            if created:
                heads = [(head["id"], head["attempts"]) for head in await self.pool.fetch(_HEADS, created)]
                for start in range(0, len(heads), BATCH):
                    await self.queue.enqueue(batch_job(heads[start : start + BATCH], self.settings, self.concurrency))
            if not full:
                return position

    async def _dispatch_page(self) -> tuple[list[UUID], Position, bool]:
        async with self.pool.acquire() as connection:
            # Dispatchers take turns on a session lock, not in one transaction: reading the feed inside a
            # transaction would hold an xid, and so the feed's horizon, and order its locks against DDL badly.
            await connection.execute(f"SELECT pg_advisory_lock({_DISPATCH_LOCK})")
            try:
                return await self._dispatch_locked(connection)
            finally:
                await connection.execute(f"SELECT pg_advisory_unlock({_DISPATCH_LOCK})")

    async def _dispatch_locked(
        self, connection: PoolConnectionProxy[asyncpg.Record]
    ) -> tuple[list[UUID], Position, bool]:
        """One page of the feed after the cursor as deliveries, and the cursor moved past it, in one transaction
        (the cursor read under the lock is the one this page moves on)."""
        cursor = await connection.fetchval("SELECT cursor FROM webhook_dispatch WHERE id = $1", DISPATCH_ROW)
        after = Position.parse(cursor) if cursor else START
        endpoints = await connection.fetch("SELECT id, event_types FROM webhooks WHERE enabled")
        if not endpoints:
            # Nothing to deliver to: what commits from now on is all a new endpoint will be sent.
            following, items, full = max(after, await self.feed.head()), [], False
        else:
            batch = await self.feed.read(after, DISPATCH_PAGE)
            following, items, full = batch.next, batch.items, len(batch.items) == DISPATCH_PAGE
        rows: list[tuple[UUID, UUID, UUID, str, str, str]] = []
        for item in items:
            event = item.event
            payload: str | None = None
            for endpoint in endpoints:
                if matches(endpoint["event_types"], event.type):
                    payload = payload or msgspec.json.encode(event).decode()
                    subject = f"{event.subject.type}:{event.subject.id}"
                    rows.append((uuid7(), endpoint["id"], event.id, event.type, subject, payload))
        created: list[UUID] = []
        async with connection.transaction():
            if rows:
                columns = [list(column) for column in zip(*rows, strict=True)]
                created = [record["id"] for record in await connection.fetch(_INSERT_DELIVERIES, *columns)]
            if following != after:
                await connection.execute(
                    "INSERT INTO webhook_dispatch (id, cursor, created_at, updated_at) VALUES ($1, $2, now(), now())"
                    " ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor, updated_at = now()",
                    DISPATCH_ROW,
                    following.cursor,
                )
        return created, following, full

    async def sweep(self, overdue: float = SWEEP_OVERDUE) -> int:
        """Enqueue the deliveries at the head of their subject's line that are due for `overdue` seconds or more;
        a job already on the queue under the same key is not added twice."""
        due = await self.pool.fetch(_OVERDUE, overdue, SWEEP_BATCH)
        await self._enqueue(due)
        return len(due)

    async def _enqueue(self, deliveries: list[asyncpg.Record]) -> None:
        for delivery in deliveries:
            job = deliver_job(delivery["id"], delivery["attempts"], self.settings, delivery["next_attempt_at"])
            await self.queue.enqueue(job)


@dataclass
class WebhookRuntime:
    """What one worker process keeps for webhooks: the HTTP client of deliveries, a pool, and the dispatcher's loop
    (its own notification connection)."""

    settings: Settings
    pool: asyncpg.Pool
    client: httpx.AsyncClient
    dispatcher: Dispatcher
    _woken: asyncio.Event = field(default_factory=asyncio.Event)
    _sweep_now: bool = False
    _notified_xid: int = 0
    _task: asyncio.Task[None] | None = None

    def _on_event(self, _connection: Any, _pid: int, channel: str, payload: object) -> None:
        if channel == WAKE_CHANNEL:
            self._sweep_now = True
        elif str(payload).isdigit():
            self._notified_xid = max(self._notified_xid, int(str(payload)))
        self._woken.set()

    async def run(self) -> None:
        """Dispatch on every wake, and sweep every SWEEP_INTERVAL seconds, until cancelled."""
        listener: asyncpg.Connection | None = None
        loop = asyncio.get_running_loop()
        last_sweep, retry_in = 0.0, BEHIND_HORIZON_RETRY
        while True:
            try:
                if listener is None or listener.is_closed():
                    listener = await asyncpg.connect(self.settings.asyncpg_direct_url)
                    await listener.add_listener(EVENTS_CHANNEL, self._on_event)
                    await listener.add_listener(WAKE_CHANNEL, self._on_event)
                    self._woken.set()  # what committed while no one listened
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), SWEEP_INTERVAL)
                await asyncio.sleep(COALESCE_SECONDS)  # the commits of the next moments in the same round
                self._woken.clear()
                position = await self.dispatcher.dispatch()
                if self._notified_xid >= position.xid:
                    # A notified event is still behind the horizon (an older transaction is open): read again
                    # shortly rather than wait for the sweep, backing off while that transaction lasts.
                    loop.call_later(retry_in, self._woken.set)
                    retry_in = min(retry_in * 2, 0.25)
                else:
                    retry_in = BEHIND_HORIZON_RETRY
                if self._sweep_now or loop.time() - last_sweep >= SWEEP_INTERVAL:
                    await self.dispatcher.sweep(0.0 if self._sweep_now else SWEEP_OVERDUE)
                    self._sweep_now, last_sweep = False, loop.time()
            except asyncio.CancelledError:
                if listener is not None:
                    await asyncio.shield(listener.close())
                raise
            except Exception:  # the database or the queue is away: try again shortly, never stop dispatching
                log.warning("webhook dispatch failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.aclose()
        await self.pool.close()


async def start(ctx: WorkerContext) -> None:
    """The worker's start-up: the webhook runtime in its context, and the dispatcher's loop running."""
    settings = ctx["settings"]
    concurrency = ctx["worker"].concurrency
    pool = await asyncpg.create_pool(settings.asyncpg_direct_url, min_size=1, max_size=concurrency + 3)
    client = httpx.AsyncClient(
        timeout=settings.webhook_timeout,
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment: the address checked is the one connected to
        limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency),
    )
    runtime = WebhookRuntime(settings, pool, client, Dispatcher(settings, pool, ctx["worker"].queue, concurrency))
    runtime._task = asyncio.create_task(runtime.run())
    cast_ctx: WebhookContext = ctx  # type: ignore[assignment]
    cast_ctx["webhooks"] = runtime


async def stop(ctx: WorkerContext) -> None:
    runtime = ctx.get("webhooks")
    if isinstance(runtime, WebhookRuntime):
        await runtime.close()
