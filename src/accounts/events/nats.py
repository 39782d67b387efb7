"""The NATS relay: every feed event published to JetStream, at least once, for consumers that fan out without
loading PostgreSQL. Off unless NATS_URL is set; then each worker process runs one (`start`), and one of them at a
time (a session advisory lock) publishes.

Each event goes to `<NATS_SUBJECT_PREFIX>.<type>` (`accounts.events.user.created`) in the stream NATS_STREAM,
made if missing over `<prefix>.>`, with the event id as `Nats-Msg-Id`: JetStream drops a second copy within its
duplicate window, so an event published again after a crash or a restart is stored once. The body is the event
as the feed serves it; the `Accounts-Cursor` header is its feed cursor. The relay's cursor is the stream itself:
the last message's `Accounts-Cursor`, which a publish acknowledged has stored, so it resumes right after the
last event it knows the stream has (from the start of the feed when the stream is empty).
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import msgspec
import nats
import structlog
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from accounts.config import Settings
from accounts.events.services import START, EventFeed, FeedItem, Position
from accounts.events.stream import EventBroadcaster

log = structlog.get_logger("accounts.events.nats")

CURSOR_HEADER = "Accounts-Cursor"
DUPLICATE_WINDOW = 600.0
"""Seconds JetStream remembers a `Nats-Msg-Id` (its default is 2 minutes): a relay restarted within it publishes
nothing twice into the stream."""
PAGE = 500
WAIT_SECONDS = 5.0
"""A feed read at least this often, whether or not a notification came."""
RETRY_SECONDS = 1.0
_LEADER_LOCK = "hashtextextended('nats relay', 0)"
_encoder = msgspec.json.Encoder()


def subject_of(settings: Settings, event_type: str) -> str:
    return f"{settings.nats_subject_prefix}.{event_type}"


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """The stream over `<prefix>.>`, made if it is missing (one that exists is left as its operator set it)."""
    try:
        await js.stream_info(settings.nats_stream)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=settings.nats_stream,
                subjects=[f"{settings.nats_subject_prefix}.>"],
                duplicate_window=DUPLICATE_WINDOW,
            )
        )


async def stored_position(js: JetStreamContext, settings: Settings) -> Position:
    """Where the stream's last event is in the feed (START for an empty stream)."""
    info = await js.stream_info(settings.nats_stream)
    if not info.state.last_seq:
        return START
    message = await js.get_msg(settings.nats_stream, info.state.last_seq)
    cursor = (message.headers or {}).get(CURSOR_HEADER)
    return Position.parse(cursor) if cursor else START


class NatsRelay:
    """Follows the feed from the stream's stored cursor and publishes each event, acknowledged one by one (so the
    stream holds them in feed order and its last one is always the cursor)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, broadcaster: EventBroadcaster) -> None:
        self.settings = settings
        self.feed = EventFeed(pool)
        self.pool = pool
        self.broadcaster = broadcaster
        self.published = 0

    async def publish(self, js: JetStreamContext, items: list[FeedItem]) -> None:
        for item in items:
            headers = {"Nats-Msg-Id": str(item.event.id), CURSOR_HEADER: item.position.cursor}
            await js.publish(subject_of(self.settings, item.event.type), _encoder.encode(item.event), headers=headers)
            self.published += 1

    async def relay(self, js: JetStreamContext, after: Position | None = None) -> None:
        """Publish every feed event after `after` (default: the stream's stored cursor), then each as it commits,
        until cancelled."""
        position = await stored_position(js, self.settings) if after is None else after
        while True:
            batch = await self.feed.read(position, PAGE)
            await self.publish(js, batch.items)
            position = batch.next
            if len(batch.items) < PAGE:
                await self.broadcaster.changed(WAIT_SECONDS)

    async def run(self) -> None:
        """Connect, take the lead (one relay publishes at a time), ensure the stream and relay; on any failure
        (NATS or PostgreSQL away), start again shortly from the stream's cursor."""
        while True:
            try:
                async with self.pool.acquire() as leader:
                    while not await leader.fetchval(f"SELECT pg_try_advisory_lock({_LEADER_LOCK})"):
                        await asyncio.sleep(WAIT_SECONDS)
                    client = await nats.connect(self.settings.nats_url or "", max_reconnect_attempts=-1)
                    try:
                        js = client.jetstream()
                        await ensure_stream(js, self.settings)
                        await self.relay(js)
                    finally:
                        with contextlib.suppress(Exception):
                            await client.close()
                        await leader.execute(f"SELECT pg_advisory_unlock({_LEADER_LOCK})")
            except asyncio.CancelledError:
                raise
            except Exception:  # NATS or the database away: start again from the stream's cursor
                log.warning("the NATS relay stopped; starting again", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)


class RunningRelay:
    """A relay running in this process, with its pool and wake-up, until `stop`."""

    def __init__(self, relay: NatsRelay, task: asyncio.Task[None]) -> None:
        self.relay = relay
        self.task = task

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.relay.broadcaster.stop()
        await self.relay.pool.close()


async def start(settings: Settings) -> RunningRelay | None:
    """The relay running in this process when NATS_URL is set (None otherwise)."""
    if not settings.nats_url:
        return None
    pool = await asyncpg.create_pool(settings.asyncpg_direct_url, min_size=1, max_size=3)
    broadcaster = EventBroadcaster(EventFeed(pool), settings.asyncpg_direct_url or "")
    await broadcaster.start()
    relay = NatsRelay(settings, pool, broadcaster)
    return RunningRelay(relay, asyncio.create_task(relay.run()))
