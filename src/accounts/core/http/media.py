"""The media types bodies travel in: JSON, or MessagePack for callers that ask for it.

A response is encoded as MessagePack when `Accept` prefers it (request bodies: accounts.core.http.bodies).
`Accept` is ranked here rather than with Litestar's `Accept.best_match`, which matches a type the caller
refused with `q=0` (RFC 9110 12.4.2: "not acceptable").
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.response.base import ASGIResponse
from litestar.serialization import default_serializer, encode_msgpack
from litestar.types import Receive, Scope, Send, Serializer

JSON = "application/json"
MSGPACK = "application/msgpack"
PROBLEM_JSON = "application/problem+json"
PROBLEM_MSGPACK = "application/problem+msgpack"
# What callers send for MessagePack: the common name, the older `x-` one, and the registered `vnd.` one.
MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_MSGPACK_FOR = {JSON: MSGPACK, PROBLEM_JSON: PROBLEM_MSGPACK}
_JSON_RANGES = frozenset({JSON, "application/*", "*/*"})
_VARY = (b"vary", b"Accept")
_JSON_TYPE = (b"content-type", JSON.encode())
_MSGPACK_TYPE = (b"content-type", MSGPACK.encode())
_NO_BODY = frozenset({204, 304})
_CONTENT_HEADERS = frozenset({"content-type", "content-length"})


def prefers_msgpack(scope: Scope) -> bool:
    """Whether the `Accept` header ranks MessagePack at least as high as JSON (without "msgpack", never)."""
    for name, value in scope["headers"]:
        if name == b"accept":
            return b"msgpack" in value and _msgpack_ranks_first(value.decode("latin-1"))
    return False


def _msgpack_ranks_first(accept: str) -> bool:
    """RFC 9110 12.5.1 for our two formats: the highest `q` of a range naming each; `q=0` is "not this".
    A caller that names MessagePack as high as JSON (`application/msgpack, */*`) gets MessagePack."""
    msgpack_q = json_q = 0.0
    for element in accept.lower().split(","):
        media_range, *parameters = (part.strip() for part in element.split(";"))
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # an unreadable weight names nothing
        if media_range in MSGPACK_TYPES:
            msgpack_q = max(msgpack_q, q)
        elif media_range in _JSON_RANGES:
            json_q = max(json_q, q)
    return msgpack_q > 0 and msgpack_q >= json_q


def msgpack_of(content: Any, enc_hook: Serializer = default_serializer) -> bytes:
    """`content` in MessagePack, with the values JSON would carry (times as RFC 3339 strings, not MessagePack
    timestamps): one schema for both formats."""
    return encode_msgpack(msgspec.to_builtins(content, enc_hook=enc_hook), enc_hook)


class PreEncoded(ASGIResponse):
    """A constant body, encoded once in both media types; each request gets the one its Accept prefers.
    A handler returns it as is: no per-request encoding, headers or response object (probes, hot paths)."""

    def __init__(self, content: Any) -> None:
        super().__init__(body=msgspec.json.encode(content), media_type=JSON, headers={"Vary": "Accept"})
        self._msgpack = ASGIResponse(body=msgpack_of(content), media_type=MSGPACK, headers={"Vary": "Accept"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if prefers_msgpack(scope):
            await self._msgpack(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class DirectResponse:
    """An answer whose status, encoded headers and body are ready: two ASGI messages, then its background task.

    NegotiatedResponse renders into one. A hot handler makes one itself (`negotiated`) and returns it, annotated
    with it and documenting its answer in `responses`: Litestar's Response, made and then turned into an ASGI
    answer on every request, cost 20 us of a 110 us client-credentials grant (in-process; `make bench` scenario 8).
    Route-level headers (`cache_control`) do not apply to such an answer: pass them to `negotiated`."""

    __slots__ = ("background", "body", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        background: BackgroundTask | BackgroundTasks | None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.background = background

    @classmethod
    def negotiated(
        cls,
        content: msgspec.Struct,
        scope: Scope,
        *,
        status: int = 200,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        background: BackgroundTask | None = None,
    ) -> DirectResponse:
        """`content` in JSON, or MessagePack when the caller prefers it, with `headers` (encoded, lower-case)."""
        if prefers_msgpack(scope):
            body, media_type = msgpack_of(content), _MSGPACK_TYPE
        else:
            body, media_type = msgspec.json.encode(content, enc_hook=default_serializer), _JSON_TYPE
        return cls(status, [*headers, media_type, (b"content-length", b"%d" % len(body)), _VARY], body, background)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002 - the ASGI signature
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})
        if self.background is not None:
            await self.background()


class NegotiatedResponse(Response[Any]):
    """The app's response class: JSON, or MessagePack when the caller prefers it (problems too).

    A body rendered from content, with no cookies, is sent as a `DirectResponse`: its headers encoded once, straight
    into the list ASGI sends. Litestar's ASGIResponse put them in a header map first, then encoded and copied them:
    15 us of a 75 us introspection (in-process; `make bench` scenario 9)."""

    def to_asgi_response(  # type: ignore[override] # an ASGI app, as Litestar's handlers take it
        self, app: Any, request: Request[Any, Any, Any], *, media_type: str | None = None, **kwargs: Any
    ) -> ASGIResponse | DirectResponse:
        chosen = str(self.media_type or media_type or JSON)
        # No content (a 204) is no body in either format: MessagePack's nil would be a body a 204 cannot have.
        if chosen not in _MSGPACK_FOR or self.content is None or isinstance(self.content, bytes):
            self.media_type = chosen
            return super().to_asgi_response(app, request, media_type=chosen, **kwargs)
        self.headers.setdefault("Vary", "Accept")
        if prefers_msgpack(request.scope):
            chosen = _MSGPACK_FOR[chosen]
        self.media_type = chosen
        status = self.status_code or kwargs.get("status_code") or 200
        route_headers = kwargs.get("headers")
        headers = {**route_headers, **self.headers} if route_headers else self.headers
        if (
            self.cookies
            or kwargs.get("cookies")
            or kwargs.get("is_head_response")
            or status < 200  # informational: no body
            or status in _NO_BODY
            or not _CONTENT_HEADERS.isdisjoint(map(str.lower, headers))  # set by the handler: Litestar keeps them
        ):
            return super().to_asgi_response(app, request, media_type=chosen, **kwargs)
        body = self.render(self.content, chosen)
        encoded = [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in headers.items()]
        encoded += [(b"content-type", chosen.encode()), (b"content-length", b"%d" % len(body))]
        return DirectResponse(status, encoded, body, self.background or kwargs.get("background"))

    def render(self, content: Any, media_type: str, enc_hook: Serializer = default_serializer) -> bytes:
        if media_type in (MSGPACK, PROBLEM_MSGPACK) and not isinstance(content, bytes):
            return msgpack_of(content, enc_hook)
        return super().render(content, media_type, enc_hook)
