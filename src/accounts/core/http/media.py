"""The media types bodies travel in: JSON, or MessagePack for callers that ask for it.

A response is encoded as MessagePack when `Accept` prefers it (request bodies: accounts.core.http.bodies).
`Accept` is ranked here rather than with Litestar's `Accept.best_match`, which matches a type the caller
refused with `q=0` (RFC 9110 12.4.2: "not acceptable").
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
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


class PreEncoded(ASGIResponse):
    """A constant body, encoded once in both media types; each request gets the one its Accept prefers.
    A handler returns it as is: no per-request encoding, headers or response object (probes, hot paths)."""

    def __init__(self, content: Any) -> None:
        super().__init__(body=msgspec.json.encode(content), media_type=JSON, headers={"Vary": "Accept"})
        self._msgpack = ASGIResponse(
            body=msgspec.msgpack.encode(content), media_type=MSGPACK, headers={"Vary": "Accept"}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if prefers_msgpack(scope):
            await self._msgpack(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def msgpack_of(content: Any, enc_hook: Serializer = default_serializer) -> bytes:
    """`content` in MessagePack, with the values JSON would carry (times as RFC 3339 strings, not MessagePack
    timestamps): one schema for both formats."""
    return encode_msgpack(msgspec.to_builtins(content, enc_hook=enc_hook), enc_hook)


class DirectResponse:
    """One answer sent straight to ASGI: `content` (a Struct) in JSON, or MessagePack when the caller prefers it,
    with the headers its route always sends, encoded once. For hot paths: Litestar's Response, turned into an
    ASGIResponse on every request (its headers merged, encoded and copied), cost 20 us of a 110 us
    client-credentials grant (in-process; `make bench` scenario 8). A handler that returns it is annotated with it
    and documents its answer in `responses`; route-level headers (`cache_control`) do not apply: pass them here."""

    __slots__ = ("background", "body", "headers", "status")

    def __init__(
        self,
        content: msgspec.Struct,
        scope: Scope,
        *,
        status: int = 200,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        background: BackgroundTask | None = None,
    ) -> None:
        if prefers_msgpack(scope):
            self.body, media_type = msgpack_of(content), b"application/msgpack"
        else:
            self.body, media_type = msgspec.json.encode(content), b"application/json"
        self.headers = [*headers, (b"content-type", media_type), (b"content-length", b"%d" % len(self.body)), _VARY]
        self.status = status
        self.background = background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002 - the ASGI signature
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})
        if self.background is not None:
            await self.background()


class NegotiatedResponse(Response[Any]):
    """The app's response class: JSON, or MessagePack when the caller prefers it (problems too)."""

    def to_asgi_response(
        self, app: Any, request: Request[Any, Any, Any], *, media_type: str | None = None, **kwargs: Any
    ) -> ASGIResponse:
        chosen = str(self.media_type or media_type or JSON)
        # No content (a 204) is no body in either format: MessagePack's nil would be a body a 204 cannot have.
        if chosen in _MSGPACK_FOR and self.content is not None and not isinstance(self.content, bytes):
            self.headers.setdefault("Vary", "Accept")
            if prefers_msgpack(request.scope):
                chosen = _MSGPACK_FOR[chosen]
        self.media_type = chosen
        return super().to_asgi_response(app, request, media_type=chosen, **kwargs)

    def render(self, content: Any, media_type: str, enc_hook: Serializer = default_serializer) -> bytes:
        if media_type in (MSGPACK, PROBLEM_MSGPACK) and not isinstance(content, bytes):
            return msgpack_of(content, enc_hook)
        return super().render(content, media_type, enc_hook)
