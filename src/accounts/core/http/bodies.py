"""Request bodies: decoded from JSON or MessagePack into the plain values a handler's Struct validates, refused
when they cannot be read, and bounded in time while they arrive.

`BodyRequest` is the app's request class: Litestar reads a JSON body through `Request.json()`, and this one
reads a MessagePack body there too, so the same Structs validate both the same way. `check_input` runs before
every handler of the API: a query string or form that is not UTF-8 is refused there, since Litestar would
decode it with U+FFFD in place of the bad bytes and go on.

A client that stops sending a body part-way gets a 408 and loses the connection, instead of holding a socket
and a worker slot for as long as it likes. granian bounds the time to send the request head
(REQUEST_READ_TIMEOUT, set by `accounts serve`) but has no bound for the body, so `BodyDeadlines` bounds the wait
for each chunk of it the same way (as nginx's client_body_timeout does), for every request (the edge,
accounts.core.http.edge, applies it). Once the body is complete, `receive` is passed through untouched: a response
that waits on it for the client to disconnect (a download) waits as long as it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.params import BodyKwarg
from litestar.types import Receive, ReceiveMessage, Scope

from accounts.core.errors import FieldError, InvalidInput, MalformedRequest, RequestTimeout, UnsupportedMediaType
from accounts.core.http.media import JSON, MSGPACK, MSGPACK_TYPES

_NOT_UTF8 = "is not valid UTF-8"


class BodyRequest(Request[Any, Any, Any]):
    """The app's request: `json()`, which Litestar calls for a handler's JSON body, decodes JSON or MessagePack
    by the Content-Type (415 for anything else), and refuses what cannot be decoded (400 naming the field)."""

    _decoded: Any = msgspec.UNSET

    async def json(self) -> Any:
        if self._decoded is msgspec.UNSET:
            self._decoded = _decode_body(await self.body(), media_type_of(self.scope))
        return self._decoded


async def check_input(request: Request[Any, Any, Any]) -> None:
    """Before a handler runs: a query string (and a form body) whose fields are not UTF-8 is a 400 naming them,
    and a form body of another media type a 415."""
    _refuse_undecodable(request.scope["query_string"], "query string")
    body = request.route_handler.parsed_fn_signature.parameters.get("data")
    if body is None or not isinstance(body.kwarg_definition, BodyKwarg):
        return
    expected = body.kwarg_definition.media_type
    if expected == RequestEncodingType.URL_ENCODED:
        if (sent := media_type_of(request.scope)) != expected:
            raise _unsupported(sent, RequestEncodingType.URL_ENCODED.value)
        _refuse_undecodable(await request.body(), "form")


def media_type_of(scope: Scope) -> str:
    """The Content-Type's media type, lower-cased, without its parameters; read off the raw headers: Litestar's
    `request.content_type` builds the request's whole header map first (2.5 us of a 90 us grant, in-process).
    What the bodies are decoded by, and what an idempotency key's fingerprint holds."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower().decode("latin-1")
    return ""


def _decode_body(body: bytes, media_type: str) -> Any:
    if media_type in MSGPACK_TYPES:
        return _decode(body, msgspec.msgpack.decode, "MessagePack")
    if media_type == JSON or media_type.endswith("+json"):
        return _decode(body, msgspec.json.decode, "JSON")
    raise _unsupported(media_type, f"{JSON} or {MSGPACK}")


def _unsupported(media_type: str, accepted: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"Send the body as {accepted}, not {media_type or 'without a Content-Type'}.")


def _decode(body: bytes, decode: Callable[..., Any], format_name: str) -> Any:
    """The body as plain values, for the handler's Struct to validate; undecodable or too deep is a 400."""
    if not body:
        return None
    try:
        return decode(body)
    except UnicodeDecodeError:  # msgspec checks the UTF-8 of each string as it decodes it
        raise _not_utf8(body, decode, format_name) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise MalformedRequest(f"The body is not valid {format_name}: {reason}") from None


def _not_utf8(body: bytes, decode: Callable[..., Any], format_name: str) -> InvalidInput:
    """400 naming the fields whose strings are not valid UTF-8: the body is decoded again with each field's value
    left undecoded (`msgspec.Raw`), then each value alone; where even the field names are not UTF-8, the fault is
    the body's."""
    fields: list[str] = []
    with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        for name, value in decode(body, type=dict[str, msgspec.Raw]).items():
            try:
                decode(value)
            except UnicodeDecodeError:
                fields.append(name)
    return _invalid(f"The body is not valid {format_name}: a string in it is not valid UTF-8.", fields or ["body"])


def _refuse_undecodable(encoded: bytes, what: str) -> None:
    """400 naming the fields of a query string or form whose names or values are not UTF-8 once percent-decoded."""
    if encoded.isascii() and b"%" not in encoded:
        return  # the common case: nothing to decode
    fields = []
    for pair in encoded.split(b"&"):
        name, _, value = (unquote_to_bytes(part.replace(b"+", b" ")) for part in pair.partition(b"="))
        try:
            name.decode(), value.decode()
        except UnicodeDecodeError:
            fields.append(name.decode("utf-8", "replace"))
    if fields:
        raise _invalid(f"The {what} is not valid UTF-8.", fields)


def _invalid(detail: str, fields: list[str]) -> InvalidInput:
    return InvalidInput(detail, errors=[FieldError(field=field, message=_NOT_UTF8) for field in fields])


class BodyTimeout(RequestTimeout):
    """408: the client stopped sending its request body."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request body stopped arriving: nothing came for {seconds:g} s.")


class BodyAbandoned(MalformedRequest):
    """The client closed the connection before its body was whole: no one reads the answer, but the request is
    counted and logged as the client's doing (Litestar would make it a 500)."""

    type = "/problems/request-abandoned"

    def __init__(self) -> None:
        super().__init__("The client closed the connection before it sent the whole request body.")


class BodyDeadlines:
    """The body reads waiting on their clients, each with its deadline, watched by one timer per worker that ticks
    while any read waits, instead of a timer per read: uvloop keeps a cancelled timer, and the context it copied,
    until the time it was set for, so `asyncio.timeout` around each read kept five objects per request alive for
    REQUEST_READ_TIMEOUT seconds (at 4,000 requests/s a worker, 400,000 for the garbage collector to walk;
    `make bench` scenario 8: 235 -> 221 us of server CPU a grant). A read that outlives its deadline is cancelled
    at the next tick, so it gets between `seconds` and `seconds + TICK`."""

    TICK = 0.25

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._ticking_on: asyncio.AbstractEventLoop | None = None

    def bound(self, receive: Receive) -> Receive:
        """One request's `receive`, each wait for a chunk of its body bounded (BodyTimeout when nothing came for
        `seconds`), a disconnect before the body is whole a BodyAbandoned; once the body is whole, `receive`
        untouched. One coroutine a read, not two: this is on every request with a body."""
        complete = False

        async def receive_within_deadline() -> ReceiveMessage:
            nonlocal complete
            if complete:
                return await receive()
            task = asyncio.current_task()
            assert task is not None  # noqa: S101 - an ASGI app runs in a task
            loop = task.get_loop()  # not get_running_loop() again: it asks the kernel for the pid each time
            cancelling = task.cancelling()
            self._waiting[task] = loop.time() + self.seconds
            if self._ticking_on is not loop:
                self._ticking_on = loop
                loop.call_later(self.TICK, self._tick, loop)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task in self._expired and task.uncancel() <= cancelling:  # ours, and no one else's cancellation
                    raise BodyTimeout(self.seconds) from None
                raise
            finally:
                self._waiting.pop(task, None)
                self._expired.discard(task)
            if message["type"] == "http.disconnect":
                raise BodyAbandoned
            complete = not message.get("more_body", False)
            return message

        return receive_within_deadline

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._waiting.items()):
            if deadline <= now:
                del self._waiting[task]
                self._expired.add(task)
                task.cancel()
        if self._waiting:
            loop.call_later(self.TICK, self._tick, loop)
        else:
            self._ticking_on = None
