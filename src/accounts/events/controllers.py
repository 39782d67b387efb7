"""HTTP endpoints for events: the feed `/api/v1/events`, its live stream `/api/v1/events/stream` (SSE), and the
audit trail `/api/v1/audit-events`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, Parameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from accounts.config import Settings
from accounts.core.errors import FieldError, InvalidInput, problem_responses
from accounts.core.security import AUTHENTICATED, requires, requires_admin
from accounts.events.schemas import EVENT_TYPES, AuditPage, EventPage
from accounts.events.services import (
    FEED_PAGE_MAX,
    AuditQuery,
    AuditTrail,
    EventFeed,
    Position,
    parse_ref,
)
from accounts.events.stream import EventBroadcaster, Frames, tail_item

CURSOR = r"^[A-Za-z0-9_-]{22}$"
REF = r"^[a-z_]{1,32}(?::[\x21-\x7e]{1,64})?$"
TYPES_MAX = 32
STREAM_PAGE = 500

Cursor = Annotated[
    str | None,
    Parameter(pattern=CURSOR, description="Return events after this cursor (a page's `next`); omit to start at the"
              " oldest event kept."),
]  # fmt: skip
TypeFilter = Annotated[
    list[str] | None,
    QueryParameter(name="type", max_items=TYPES_MAX, description="Only events of these types (repeat the parameter)."),
]
SubjectFilter = Annotated[
    str | None,
    Parameter(
        pattern=REF, description="Only events about this subject: `user:<id>`, or a subject type alone (`user`)."
    ),
]


def _types(values: list[str] | None, field: str = "type") -> tuple[str, ...]:
    unknown = sorted({value for value in values or () if value not in EVENT_TYPES})
    if unknown:
        detail = f"Unknown event type {unknown[0]!r}; the types are listed in the README's event catalogue."
        raise InvalidInput(detail, errors=[FieldError(field=field, message=detail)])
    return tuple(dict.fromkeys(values or ()))


def _utc(moment: datetime | None) -> datetime | None:
    """A time without an offset is UTC (the API's times all are)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _subject(value: str | None, field: str = "subject") -> tuple[str, str | None] | None:
    return None if value is None else parse_ref(value, field, id_optional=True)


class EventController(Controller):
    path = "/events"
    tags = ["events"]
    security = AUTHENTICATED
    guards = [requires("events:read")]

    @get(
        name="listEvents",
        summary="Read the event feed",
        description="Events in commit-safe order after `after`, for admins and callers with `events:read`. Poll with"
        " each page's `next`: every committed event comes exactly once, in order, even when transactions commit out"
        " of order. `next` moves on even when a page is empty or filtered. Audit-only events (logins) are not here.",
        responses=problem_responses(400, 401, 403),
    )
    async def list_events(
        self,
        event_feed: NamedDependency[EventFeed],
        *,
        after: Cursor = None,
        limit: Annotated[int, Parameter(ge=1, le=FEED_PAGE_MAX, description="Page size.")] = 100,
        types: TypeFilter = None,
        subject: SubjectFilter = None,
    ) -> EventPage:
        start = Position.parse(after) if after is not None else Position(0, 0)
        batch = await event_feed.read(start, limit, types=_types(types), subject=_subject(subject))
        return EventPage(items=[item.event for item in batch.items], next=batch.next.cursor)

    @get(
        "/stream",
        name="streamEvents",
        summary="Stream events as they are committed (SSE)",
        description="`text/event-stream`: each feed event as `event: <type>`, `id: <cursor>`, `data: <event JSON>`;"
        " a comment line as a heartbeat when idle. Reconnect with `Last-Event-ID` (or `after`) to resume after the"
        " last event received; without either the stream starts with what commits from now on.",
        media_type="text/event-stream",
        responses=problem_responses(400, 401, 403),
    )
    async def stream_events(
        self,
        event_feed: NamedDependency[EventFeed],
        event_broadcaster: NamedDependency[EventBroadcaster],
        settings: NamedDependency[Settings],
        *,
        after: Cursor = None,
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="last-event-id", pattern=CURSOR, description="The last event's `id`, sent on reconnect."
            ),
        ] = None,
        types: TypeFilter = None,
        subject: SubjectFilter = None,
    ) -> ServerSentEvent:
        resume = last_event_id or after
        field = "Last-Event-ID" if last_event_id else "after"
        start = Position.parse(resume, field) if resume is not None else None
        wanted, about = _types(types), _subject(subject)
        if start is None:
            start = await event_feed.head()
        events = _stream(
            event_feed, event_broadcaster, start, types=wanted, subject=about, heartbeat=settings.event_stream_heartbeat
        )
        return ServerSentEvent(events)


async def _stream(
    feed: EventFeed,
    broadcaster: EventBroadcaster,
    cursor: Position,
    *,
    types: Sequence[str],
    subject: tuple[str, str | None] | None,
    heartbeat: float,
) -> AsyncIterator[ServerSentEventMessage]:
    """From the worker's shared tail when `cursor` is in it; else from the feed, a page at a time, until it is."""
    with broadcaster.subscribed():
        while True:
            tail = broadcaster.after(cursor, types, subject)
            if tail is None:
                batch = await feed.read(cursor, STREAM_PAGE, types=types, subject=subject)
                items, following = [tail_item(item) for item in batch.items], batch.next
            else:
                items, following = tail, max(cursor, broadcaster.head)
            if items:
                yield Frames(items)
            cursor = following
            if not items and not await broadcaster.changed(heartbeat):
                yield ServerSentEventMessage(comment="heartbeat", data=None)


class AuditEventController(Controller):
    path = "/audit-events"
    tags = ["events"]
    security = AUTHENTICATED
    guards = [requires_admin]

    @get(
        name="listAuditEvents",
        summary="Search the audit trail",
        description="Every event kept (AUDIT_RETENTION_DAYS), audit-only ones (logins) included, newest first, for"
        " admins. Filter by `actor` (`user:<id>`, `api_key:<id>`, `client:<id>`, or `system`), `subject`, `type` and"
        " the time range [`from`, `to`).",
        responses=problem_responses(400, 401, 403),
    )
    async def list_audit_events(
        self,
        audit_trail: NamedDependency[AuditTrail],
        *,
        limit: Annotated[int, Parameter(ge=1, le=200, description="Page size.")] = 20,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000, description="Rows to skip.")] = 0,
        actor: Annotated[
            str | None, Parameter(pattern=REF, description="Who acted: `user:<id>`, `api_key:<id>`, `system`, ...")
        ] = None,
        subject: SubjectFilter = None,
        types: TypeFilter = None,
        occurred_from: Annotated[
            datetime | None, QueryParameter(name="from", description="Only events at or after this time (RFC 3339).")
        ] = None,
        occurred_to: Annotated[
            datetime | None, QueryParameter(name="to", description="Only events before this time (RFC 3339).")
        ] = None,
    ) -> AuditPage:
        occurred_from, occurred_to = _utc(occurred_from), _utc(occurred_to)
        if occurred_from is not None and occurred_to is not None and occurred_from >= occurred_to:
            detail = "`from` must be before `to`."
            raise InvalidInput(detail, errors=[FieldError(field="from", message=detail)])
        query = AuditQuery(
            limit=limit,
            offset=offset,
            actor=_subject(actor, "actor"),
            subject=_subject(subject),
            types=_types(types),
            occurred_from=occurred_from,
            occurred_to=occurred_to,
        )
        return await audit_trail.page(query)
