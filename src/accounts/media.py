"""The media types bodies travel in: JSON, or MessagePack for callers that ask for it.

A MessagePack request body is decoded to the same plain values a JSON body would give, so the same
Structs validate it the same way; a response is encoded as MessagePack when `Accept` prefers it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import Accept
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, HTTPException
from litestar.params import BodyKwarg
from litestar.response.base import ASGIResponse
from litestar.serialization import default_serializer, encode_msgpack
from litestar.types import Scope, Serializer
from litestar.utils.scope.state import ScopeState

JSON = "application/json"
MSGPACK = "application/msgpack"
PROBLEM_JSON = "application/problem+json"
PROBLEM_MSGPACK = "application/problem+msgpack"
# What callers send for MessagePack: the common name, the older `x-` one, and the registered `vnd.` one.
MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_MSGPACK_FOR = {JSON: MSGPACK, PROBLEM_JSON: PROBLEM_MSGPACK}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def prefers_msgpack(scope: Scope) -> bool:
    """Whether the `Accept` header ranks MessagePack above JSON (a header without "msgpack" never does)."""
    for name, value in scope["headers"]:
        if name == b"accept":
            if b"msgpack" not in value:
                return False
            accept = Accept(value.decode("latin-1"))
            return accept.best_match([JSON, *MSGPACK_TYPES], default=JSON) in MSGPACK_TYPES
    return False


class NegotiatedResponse(Response[Any]):
    """The app's response class: JSON, or MessagePack when the caller prefers it (problems too)."""

    def to_asgi_response(
        self, app: Any, request: Request[Any, Any, Any], *, media_type: str | None = None, **kwargs: Any
    ) -> ASGIResponse:
        chosen = str(self.media_type or media_type or JSON)
        if chosen in _MSGPACK_FOR and not isinstance(self.content, bytes):
            self.headers.setdefault("Vary", "Accept")
            if prefers_msgpack(request.scope):
                chosen = _MSGPACK_FOR[chosen]
        self.media_type = chosen
        return super().to_asgi_response(app, request, media_type=chosen, **kwargs)

    def render(self, content: Any, media_type: str, enc_hook: Serializer = default_serializer) -> bytes:
        if media_type in (MSGPACK, PROBLEM_MSGPACK) and not isinstance(content, bytes):
            return encode_msgpack(content, enc_hook)
        return super().render(content, media_type, enc_hook)


async def decode_body(request: Request[Any, Any, Any]) -> None:
    """Before a body handler runs: reject a body of a media type it does not read (415), and decode a
    MessagePack body into the plain values that the handler's Struct then validates like JSON."""
    if request.method not in _BODY_METHODS:
        return
    body = request.route_handler.parsed_fn_signature.parameters.get("data")
    if body is None:
        return
    expected = body.kwarg_definition.media_type if isinstance(body.kwarg_definition, BodyKwarg) else JSON
    media_type = request.content_type[0]
    if expected == RequestEncodingType.JSON:
        if media_type in MSGPACK_TYPES:
            ScopeState.from_scope(request.scope).json = _decode_msgpack(await request.body())
            return
        if media_type.endswith("+json"):
            return
    if media_type != expected:
        sent = media_type or "without a Content-Type"
        accepted = f"{JSON} or {MSGPACK}" if expected == RequestEncodingType.JSON else str(expected)
        raise HTTPException(status_code=415, detail=f"Send the body as {accepted}, not {sent}.")


def _decode_msgpack(body: bytes) -> Any:
    try:
        return msgspec.msgpack.decode(body) if body else None
    except msgspec.DecodeError as exc:
        raise ClientException(detail=f"The body is not valid MessagePack: {exc}") from exc
