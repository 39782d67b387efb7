"""Per worker: one LISTEN connection, one feed read per wake, the recent events kept in memory for every stream.

A subscriber costs no task, queue or query of its own while it is idle or at the head of the feed: all wait on
one shared future, which the worker's reader resolves each time the feed moves on, and then take what is new
from the shared tail (each event encoded once, as its SSE frame). A subscriber behind the tail (resuming from an
old cursor) reads the feed itself until it catches up. Without notifications (the connection is down) the reader
polls each second; with no subscriber at all it reads nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import asyncpg
import msgspec
import structlog
from litestar.response.sse import ServerSentEventMessage

from accounts.core.db import DATABASE_ERRORS
from accounts.events.schemas import EventRead
from accounts.events.services import CHANNEL, EventFeed, FeedItem, Position, announce_with

TAIL = 10_000
"""Events kept in memory per worker, for subscribers at or near the head."""
READ_PAGE = 1000
POLL_SECONDS = 5.0
"""A read this often even with notifications: a lost one (a reconnect) delays events, never loses them."""
POLL_SECONDS_UNLISTENED = 1.0
ANNOUNCE_GAP = 0.02
"""Seconds between two announcements a worker sends: the writes of those moments share one notification. A
notification is a transaction and a wake-up of every listener: one per 2 ms cost a quarter of the PATCH throughput
(make bench scenario 11: 0.74x without events), one per 20 ms nothing measurable (1.02x)."""
CLOCK_SECONDS = 0.25
"""How often the waiters whose time is up are told so (`changed` returns False): a heartbeat's precision."""
RETRY_SECONDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""Re-reads after a notification whose transaction is not yet below the horizon (an older one is still open)."""

log = structlog.get_logger("accounts.events.stream")
_encoder = msgspec.json.Encoder()


class TailItem(NamedTuple):
    position: Position
    event: EventRead
    frame: bytes
    """The event as an SSE frame (`id:` its cursor, `event:` its type, `data:` its JSON), encoded once for every
    subscriber."""


def tail_item(item: FeedItem) -> TailItem:
    data = _encoder.encode(item.event)  # one line: JSON escapes line breaks inside strings
    frame = b"id: %s\r\nevent: %s\r\ndata: %s\r\n\r\n" % (item.position.cursor.encode(), item.event.type.encode(), data)
    return TailItem(item.position, item.event, frame)


class Frames(ServerSentEventMessage):
    """Frames already encoded, sent as they are: one message (one send) for every event a stream has to catch up."""

    def __init__(self, items: Sequence[TailItem]) -> None:
        super().__init__(data=None)
        self.frames = b"".join(item.frame for item in items)

    def encode(self) -> bytes:
        return self.frames


class EventBroadcaster:
    """The feed as this worker has read it up to `head`, and a wake-up for everyone waiting for more."""

    def __init__(self, feed: EventFeed, listen_dsn: str) -> None:
        self.feed = feed
        self._listen_dsn = listen_dsn
        self.head = Position(0, 0)
        """Every feed event up to here has been read; its tail holds those after `_floor`."""
        self._floor = self.head
        self._tail: list[TailItem] = []
        self._announced = 0
        """The highest xid a notification named: while head's xid is not past it, an event is still to come."""
        self._waiters: dict[asyncio.Future[bool], float] = {}
        """Each waiter's own future, and when (loop time) it stops waiting: `_wake` resolves them all with True, the
        clock those past their time with False."""
        self._wanted = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._subscribers = 0
        self._to_announce = 0
        self._announcing: asyncio.Task[None] | None = None
        self._stale = True
        """No stream has been waiting, so nothing was read (a worker without subscribers reads nothing)."""

    async def start(self) -> None:
        """Start at the head of the feed (as it is now), listening; should the database be down, keep trying."""
        self._tasks = [
            asyncio.create_task(self._read_forever()),
            asyncio.create_task(self._keep_listening()),
            asyncio.create_task(self._time_out_waiters()),
        ]
        announce_with(self.announce)

    async def stop(self) -> None:
        announce_with(None)
        self._closed = True
        if self._announcing is not None:
            await asyncio.gather(self._announcing, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        self._wake()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[None]:
        """While a stream is open: the worker's reader follows the feed (it stops reading when none is)."""
        self._subscribers += 1
        if self._stale:
            self._wanted.set()
        try:
            yield
        finally:
            self._subscribers -= 1

    def after(
        self, position: Position, types: Sequence[str] = (), subject: tuple[str, str | None] | None = None
    ) -> list[TailItem] | None:
        """The feed events after `position` up to `head` that pass the filters; None when `position` is before
        the tail, or the tail is not being kept (read those from the feed)."""
        if self._stale or position < self._floor:
            return None
        start = bisect.bisect_right(self._tail, position, key=lambda item: item.position)
        items = self._tail[start:]
        if types:
            items = [item for item in items if item.event.type in types]
        if subject is not None:
            items = [item for item in items if _about(item.event, subject)]
        return items

    async def changed(self, timeout: float) -> bool:
        """Wait until the head moves on (True) or `timeout` seconds pass (False, up to CLOCK_SECONDS late)."""
        if not self._tasks or self._closed:
            await asyncio.sleep(timeout)
            return False
        # A future of the waiter's own, timed out by the broadcaster's one clock: a thousand streams woken by an
        # event cost a thousand set_results, not a shield and a timer each (a third of the fan-out's time).
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters[waiter] = loop.time() + timeout
        try:
            return await waiter
        finally:
            self._waiters.pop(waiter, None)

    def announce(self, xid: int) -> None:
        """A transaction of this worker committed feed events: this worker's streams read them now, and every
        other listener hears it (one notification for the writes of a few milliseconds, sent after their commit:
        notifying inside the writing transactions would serialise their commits)."""
        self._announced = max(self._announced, xid)
        self._wanted.set()
        self._to_announce = max(self._to_announce, xid)
        if self._announcing is None:
            self._announcing = asyncio.create_task(self._send_announcements())

    async def _send_announcements(self) -> None:
        try:
            while self._to_announce and self._listener is not None:  # unlistened: the others' polls find them
                xid, self._to_announce = self._to_announce, 0
                await self._listener.execute("SELECT pg_notify($1, $2)", CHANNEL, str(xid))
                await asyncio.sleep(ANNOUNCE_GAP)
        except DATABASE_ERRORS:
            log.warning("could not announce committed events; other workers find them on their next poll")
        finally:
            self._to_announce = 0
            self._announcing = None

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    async def _time_out_waiters(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CLOCK_SECONDS)
            now = loop.time()
            for waiter in [waiter for waiter, until in self._waiters.items() if until <= now]:
                del self._waiters[waiter]
                if not waiter.done():
                    waiter.set_result(False)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            self._announced = max(self._announced, int(str(payload)))
        self._wanted.set()

    async def _read_forever(self) -> None:
        while not self._closed:
            try:
                if self._subscribers == 0:
                    self._stale = True
                    self._wanted.clear()  # nothing to read for: wait for a subscriber (or the poll)
                elif self._stale:  # start again at the head: streams further back read the feed themselves
                    self.head = self._floor = await self.feed.head()
                    self._tail.clear()
                    self._stale = False
                if not self._stale:
                    await self._catch_up()
            except DATABASE_ERRORS:
                log.warning("could not read the event feed; retrying", exc_info=True)
                await asyncio.sleep(POLL_SECONDS_UNLISTENED)
                continue
            poll = POLL_SECONDS if self.listening else POLL_SECONDS_UNLISTENED
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wanted.wait()

    async def _catch_up(self) -> None:
        """Read until the head passes every transaction announced so far (or nothing more is to come)."""
        retries = iter(RETRY_SECONDS)
        while True:
            self._wanted.clear()
            batch = await self.feed.read(self.head, READ_PAGE)
            if batch.items:
                self._keep([tail_item(item) for item in batch.items])
            moved = batch.next != self.head
            self.head = batch.next
            if moved:
                self._wake()
            if len(batch.items) == READ_PAGE:
                continue
            if self._announced < self.head.xid:
                return
            # An announced commit is still behind an older open transaction: look again soon, or on the next wake.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next(retries, RETRY_SECONDS[-1])):
                    await self._wanted.wait()

    def _keep(self, items: list[TailItem]) -> None:
        self._tail.extend(items)
        if len(self._tail) > 2 * TAIL:  # trimmed in steps, so appending stays amortised O(1)
            self._floor = self._tail[-TAIL - 1].position
            del self._tail[:-TAIL]

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._listen_dsn, timeout=5)
        await connection.add_listener(CHANNEL, self._on_notification)
        connection.add_termination_listener(self._on_lost)
        self._listener = connection
        self._wanted.set()  # anything committed before we listened is read now

    def _on_lost(self, _connection: object) -> None:
        self._listener = None
        if not self._closed:
            log.warning("event stream lost its notification connection; reconnecting")
            self._tasks.append(asyncio.create_task(self._keep_listening()))

    async def _keep_listening(self) -> None:
        while not self._closed and self._listener is None:
            try:
                await self._listen()
            except DATABASE_ERRORS:
                await asyncio.sleep(POLL_SECONDS_UNLISTENED)


def _about(event: EventRead, subject: tuple[str, str | None]) -> bool:
    return event.subject.type == subject[0] and (subject[1] is None or event.subject.id == subject[1])
