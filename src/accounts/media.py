"""The media types bodies travel in: JSON, or MessagePack for callers that ask for it.

A MessagePack request body is decoded to the same plain values a JSON body would give, so the same
Structs validate it the same way; a response is encoded as MessagePack when `Accept` prefers it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec
from litestar import Request, Response
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.params import BodyKwarg
from litestar.response.base import ASGIResponse
from litestar.serialization import default_serializer, encode_msgpack
from litestar.types import Receive, Scope, Send, Serializer
from litestar.utils.scope.state import ScopeState

JSON = "application/json"
MSGPACK = "application/msgpack"
PROBLEM_JSON = "application/problem+json"
PROBLEM_MSGPACK = "application/problem+msgpack"
# What callers send for MessagePack: the common name, the older `x-` one, and the registered `vnd.` one.
MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_MSGPACK_FOR = {JSON: MSGPACK, PROBLEM_JSON: PROBLEM_MSGPACK}
_JSON_RANGES = frozenset({JSON, "application/*", "*/*"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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
            # The values JSON would carry (times as RFC 3339 strings, not MessagePack timestamps): one schema for both.
            return encode_msgpack(msgspec.to_builtins(content, enc_hook=enc_hook), enc_hook)
        return super().render(content, media_type, enc_hook)


async def decode_input(request: Request[Any, Any, Any]) -> None:
    """Before a handler runs: refuse query parameters that are not UTF-8 (400 naming them); for a body handler,
    refuse a body of a media type it does not read (415), a form field that is not UTF-8 (400), and decode a
    JSON or MessagePack body into the plain values that the handler's Struct then validates."""
    _refuse_undecodable(request.scope["query_string"], "query string")
    if request.method not in _BODY_METHODS:
        return
    body = request.route_handler.parsed_fn_signature.parameters.get("data")
    if body is None:
        return
    expected = body.kwarg_definition.media_type if isinstance(body.kwarg_definition, BodyKwarg) else JSON
    media_type = request.content_type[0]
    if expected != RequestEncodingType.JSON:
        if media_type != expected:
            raise _unsupported(media_type, str(expected))
        if expected == RequestEncodingType.URL_ENCODED:
            _refuse_undecodable(await request.body(), "form")
        return
    if media_type in MSGPACK_TYPES:
        decoded = _decode(await request.body(), msgspec.msgpack.decode, "MessagePack")
    elif media_type == JSON or media_type.endswith("+json"):
        decoded = _decode(await request.body(), msgspec.json.decode, "JSON")
    else:
        raise _unsupported(media_type, f"{JSON} or {MSGPACK}")
    ScopeState.from_scope(request.scope).json = decoded  # where Litestar's JSON extractor looks first


def _refuse_undecodable(encoded: bytes, what: str) -> None:
    """400 naming the fields of a query string or form whose names or values are not UTF-8 once percent-decoded
    (Litestar would decode them with U+FFFD in place of the bad bytes, and go on)."""
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
        raise ValidationException(
            detail=f"The {what} is not valid UTF-8.",
            extra=[{"key": field, "message": "is not valid UTF-8"} for field in fields],
        )


def _unsupported(media_type: str, accepted: str) -> HTTPException:
    sent = media_type or "without a Content-Type"
    return HTTPException(status_code=415, detail=f"Send the body as {accepted}, not {sent}.")


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
        raise ClientException(detail=f"The body is not valid {format_name}: {reason}") from None


def _not_utf8(body: bytes, decode: Callable[..., Any], format_name: str) -> ValidationException:
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
    return ValidationException(
        detail=f"The body is not valid {format_name}: a string in it is not valid UTF-8.",
        extra=[{"key": field, "message": "is not valid UTF-8"} for field in fields or ["body"]],
    )
