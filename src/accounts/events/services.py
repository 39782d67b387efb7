"""Recording events in the change's transaction, reading the feed in commit order, and the audit trail.

The feed's order is (xid, seq): the writing transaction's id, then a sequence. Ids are handed out when a
transaction first writes, not when it commits, so a plain sequence (or a UUIDv7) would let a reader pass a row
that commits late. A reader therefore returns only rows whose xid is below the oldest transaction still running
when its snapshot was taken (`pg_snapshot_xmin(pg_current_snapshot())`, the horizon): every transaction below
it has ended, so no row can later appear behind the cursor it hands out, and every later transaction's xid is at
or above it. The horizon waits for every writing transaction of this database, so a transaction held open delays
the feed (never loses from it); read-only transactions, and those of other databases on the server, do not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from accounts.core.db import driver_connection
from accounts.core.errors import FieldError, InvalidInput
from accounts.events.context import current_actor, current_request_id
from accounts.events.schemas import (
    AUDIT_ONLY_TYPES,
    EVENT_TYPES,
    AuditPage,
    EventActor,
    EventRead,
    EventSubject,
)

Connection = asyncpg.Connection | PoolConnectionProxy
Announce = Callable[[int], None]
"""Tells every listener that a transaction (by its xid) has committed feed events (EventBroadcaster.announce)."""
CHANNEL = "accounts_events"
"""The notification of committed feed events; its payload is a committing transaction's xid."""
NOTIFY = f"SELECT pg_notify('{CHANNEL}', pg_current_xact_id()::text)"
"""Announcing inside the writing transaction (sent on commit): for processes without an announcer (job workers,
the CLI). PostgreSQL serialises the commits of notifying transactions, so the API's hot paths announce after
their commit instead, coalesced, through their worker's announcer."""
_XID = "accounts.events.xid"
"""Where `record` keeps, in the session's `info`, the xid to announce once the session commits."""
_recording = True
_announcers: dict[asyncio.AbstractEventLoop, Announce] = {}
FEED_PAGE_MAX = 1000
PURGE_BATCH = 10_000

_INSERT = (
    "INSERT INTO events (type, subject_type, subject_id, actor_type, actor_id, request_id, data, in_feed)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)"
)
_INSERT_NOTIFYING = f"WITH written AS ({_INSERT} RETURNING xid) SELECT pg_notify('{CHANNEL}', xid::text) FROM written"  # noqa: S608
_COLUMNS = "id, type, occurred_at, subject_type, subject_id, actor_type, actor_id, request_id, data"
# The oldest transaction of this database still running when the statement's snapshot was taken (else the
# snapshot's xmax): pg_snapshot_xmin, less the transactions the server says belong to other databases (they never
# write here, and one held open there must not stall this feed). Only xids positively seen elsewhere are left out,
# so a race between the snapshot and the activity list can only keep the horizon lower, never pass a row.
_HORIZON = (
    "coalesce((SELECT min(x::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS x"
    " WHERE x::text::bigint % 4294967296 NOT IN (SELECT a.backend_xid::text::bigint"
    " FROM pg_stat_get_activity(NULL) AS a"
    " WHERE a.backend_xid IS NOT NULL AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())"
    ")), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
)


class Subject(NamedTuple):
    """What an event is about: `Subject("user", user_id)`."""

    type: str
    id: UUID | str


class Position(NamedTuple):
    """A place in the feed; its cursor is opaque to callers (22 URL-safe characters)."""

    xid: int
    seq: int

    @property
    def cursor(self) -> str:
        return base64.urlsafe_b64encode(struct.pack(">qq", self.xid, self.seq)).rstrip(b"=").decode()

    @classmethod
    def parse(cls, cursor: str, field: str = "after") -> Position:
        """The position a cursor names; a 400 naming `field` for anything this service did not hand out."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "==") if len(cursor) == 22 and cursor.isascii() else b""
        except (binascii.Error, ValueError):
            raw = b""
        position = cls(*struct.unpack(">qq", raw)) if len(raw) == 16 else None
        if position is None or min(position) < 0 or position.cursor != cursor:
            detail = "Not a cursor of this feed: pass the `next` of a page (or an event's SSE id) as it was given."
            raise InvalidInput(detail, errors=[FieldError(field=field, message=detail)])
        return position


START = Position(0, 0)
"""Before the first event still kept."""


class FeedItem(NamedTuple):
    position: Position
    event: EventRead


class FeedBatch(NamedTuple):
    """Events after a position, in feed order, and where the next read starts."""

    items: list[FeedItem]
    next: Position


def set_recording(*, enabled: bool) -> None:
    """EVENTS_ENABLED, set once by the process at start-up (create_app, the worker)."""
    global _recording  # noqa: PLW0603 - one switch for the process, read by every writer
    _recording = enabled


def recording() -> bool:
    """Whether changes record events in this process (statements that write events in SQL ask it too)."""
    return _recording


def announce_with(announce: Announce | None) -> None:
    """Make `announce` (None: no longer) the announcer of the running event loop (an API worker's broadcaster)."""
    loop = asyncio.get_running_loop()
    if announce is None:
        _announcers.pop(loop, None)
    else:
        _announcers[loop] = announce


def announcer() -> Announce | None:
    """The running loop's announcer: writers that have one announce after commit; the others, in the statement."""
    try:
        return _announcers.get(asyncio.get_running_loop())
    except RuntimeError:
        return None


@event.listens_for(Session, "after_commit")
def _announce_committed(session: Session) -> None:
    """After a session's commit, the feed events it wrote are announced (`record` noted their xid)."""
    xid = session.info.pop(_XID, None)
    if xid is not None and (announce := announcer()) is not None:
        announce(xid)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_XID, None)


def _values(
    type_: str, subject: Subject, data: Mapping[str, Any] | None, actor: EventActor | None
) -> tuple[str, str, str, str, str | None, str | None, str, bool]:
    if type_ not in EVENT_TYPES:  # a programming error: every type is in the catalogue (and the README)
        msg = f"{type_!r} is not in accounts.events.schemas.EVENT_TYPES"
        raise ValueError(msg)
    actor = actor or current_actor()
    encoded = msgspec.json.encode(data or {}).decode()
    return (
        type_,
        subject.type,
        str(subject.id),
        actor.type,
        actor.id,
        current_request_id(),
        encoded,
        type_ not in AUDIT_ONLY_TYPES,
    )


async def record(
    session: AsyncSession,
    type_: str,
    subject: Subject,
    data: Mapping[str, Any] | None = None,
    *,
    actor: EventActor | None = None,
) -> None:
    """Write an event in the session's transaction: it is committed with the change or not at all.

    `actor` defaults to the request's caller (accounts.events.context), else the system; `data` must be
    JSON-encodable and never hold a password, hash, token or secret."""
    if not _recording:
        return
    values = _values(type_, subject, data, actor)
    async with driver_connection(session) as connection:
        if announcer() is None or not values[-1]:
            await connection.execute(_INSERT_NOTIFYING if values[-1] else _INSERT, *values)
            return
        xid = await connection.fetchval(f"{_INSERT} RETURNING xid", *values)
    announce_on_commit(session, xid)


def announce_on_commit(session: AsyncSession, xid: int) -> None:
    """Announce the feed events that transaction `xid` (the session's) wrote once the session commits, through the
    running loop's announcer; nothing if it rolls back."""
    session.info[_XID] = xid


async def record_on(
    connection: Connection,
    type_: str,
    subject: Subject,
    data: Mapping[str, Any] | None = None,
    *,
    actor: EventActor | None = None,
) -> None:
    """`record` on an asyncpg connection, in its current transaction (or alone, outside one); announced in the
    statement (job workers' writes are few)."""
    if not _recording:
        return
    values = _values(type_, subject, data, actor)
    await connection.execute(_INSERT_NOTIFYING if values[-1] else _INSERT, *values)


def actor_values() -> tuple[str, str | None, str | None]:
    """(actor_type, actor_id, request_id) of the current context, for statements that write events in SQL."""
    actor = current_actor()
    return actor.type, actor.id, current_request_id()


def _event(record: asyncpg.Record) -> EventRead:
    return EventRead(
        id=record["id"],
        type=record["type"],
        occurred_at=record["occurred_at"],
        subject=EventSubject(type=record["subject_type"], id=record["subject_id"]),
        actor=EventActor(type=record["actor_type"], id=record["actor_id"]),
        request_id=record["request_id"],
        data=msgspec.json.decode(record["data"]),
    )


def parse_ref(value: str, field: str, *, id_optional: bool = False) -> tuple[str, str | None]:
    """`user:<id>` as (type, id); `system` alone when `id_optional`; a 400 naming `field` otherwise."""
    kind, colon, ref = value.partition(":")
    if kind and ((colon and ref) or (id_optional and not colon)):
        return kind, ref or None
    detail = f"Expected `<type>:<id>` (e.g. `user:{UUID(int=0)}`)" + (" or a type alone." if id_optional else ".")
    raise InvalidInput(detail, errors=[FieldError(field=field, message=detail)])


class EventFeed:
    """The feed, read from the primary's pool: every committed feed event exactly once, in (xid, seq) order."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def read(
        self,
        after: Position = START,
        limit: int = 100,
        *,
        types: Sequence[str] = (),
        subject: tuple[str, str | None] | None = None,
    ) -> FeedBatch:
        """Up to `limit` events after `after`, of `types` (any, if empty) and about `subject` (any, if None)."""
        values: list[object] = [after.xid, after.seq, limit]
        conditions = ["in_feed", "(xid, seq) > ($1, $2)", "xid < horizon.xmin"]
        if types:
            values.append(list(types))
            conditions.append(f"type = ANY(${len(values)}::text[])")
        if subject is not None:
            values.append(subject[0])
            conditions.append(f"subject_type = ${len(values)}")
            if subject[1] is not None:
                values.append(subject[1])
                conditions.append(f"subject_id = ${len(values)}")
        # One statement, one snapshot: the horizon is that of the snapshot the rows are read in.
        records = await self.pool.fetch(
            f"SELECT horizon.xmin, page.* FROM (SELECT {_HORIZON} AS xmin) AS horizon LEFT JOIN LATERAL ("  # noqa: S608
            f"SELECT xid, seq, {_COLUMNS} FROM events WHERE {' AND '.join(conditions)} ORDER BY xid, seq LIMIT $3"
            ") AS page ON true",
            *values,
        )
        items = [FeedItem(Position(r["xid"], r["seq"]), _event(r)) for r in records if r["xid"] is not None]
        if len(items) == limit:
            return FeedBatch(items, items[-1].position)
        # Everything below the horizon has been seen (or filtered out): the next read starts there.
        return FeedBatch(items, max(after, Position(records[0]["xmin"], 0)))

    async def head(self) -> Position:
        """Where a reader that wants only what commits from now on starts (SSE without Last-Event-ID)."""
        xmin: int = await self.pool.fetchval(f"SELECT {_HORIZON}")
        return Position(xmin, 0)


class AuditQuery(msgspec.Struct, kw_only=True, frozen=True):
    limit: int = 20
    offset: int = 0
    actor: tuple[str, str | None] | None = None
    subject: tuple[str, str | None] | None = None
    types: tuple[str, ...] = ()
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None


class AuditTrail:
    """Every event, audit-only ones included, newest first, for admins; and their purge after the retention."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def page(self, query: AuditQuery) -> AuditPage:
        values: list[object] = [query.limit, query.offset]
        conditions: list[str] = []
        for prefix, ref in (("actor", query.actor), ("subject", query.subject)):
            if ref is None:
                continue
            values.append(ref[0])
            conditions.append(f"{prefix}_type = ${len(values)}")
            if ref[1] is not None:
                values.append(ref[1])
                conditions.append(f"{prefix}_id = ${len(values)}")
        if query.types:
            values.append(list(query.types))
            conditions.append(f"type = ANY(${len(values)}::text[])")
        if query.occurred_from is not None:
            values.append(query.occurred_from)
            conditions.append(f"occurred_at >= ${len(values)}")
        if query.occurred_to is not None:
            values.append(query.occurred_to)
            conditions.append(f"occurred_at < ${len(values)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        records = await self.pool.fetch(
            f"SELECT (SELECT count(*) FROM events {where}) AS total, page.* FROM (SELECT 1) AS one"  # noqa: S608
            f" LEFT JOIN LATERAL (SELECT {_COLUMNS} FROM events {where}"
            " ORDER BY occurred_at DESC, seq DESC LIMIT $1 OFFSET $2) AS page ON true",
            *values,
        )
        items = [_event(r) for r in records if r["id"] is not None]
        return AuditPage(items=items, total=records[0]["total"], limit=query.limit, offset=query.offset)

    async def purge(self, retention_days: int) -> int:
        """Delete events older than the retention, a batch per transaction (no long lock, no long transaction
        holding the feed's horizon back); returns how many went."""
        cutoff = timedelta(days=retention_days)
        deleted = 0
        while True:
            status = await self.pool.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE occurred_at < now() - $1::interval"
                " LIMIT $2)",
                cutoff,
                PURGE_BATCH,
            )
            count = int(status.rsplit(" ", 1)[-1])
            deleted += count
            if count < PURGE_BATCH:
                return deleted
