"""The media types request bodies may have: checked before anything decodes a body."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import BodyKwarg

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def check_body_media_type(request: Request[Any, Any, Any]) -> None:
    """Reject a body of another media type than the handler reads with 415, before anything decodes it."""
    if request.method not in _BODY_METHODS:
        return
    body = request.route_handler.parsed_fn_signature.parameters.get("data")
    if body is None:
        return
    expected = body.kwarg_definition.media_type if isinstance(body.kwarg_definition, BodyKwarg) else "application/json"
    media_type = request.content_type[0]
    if expected == RequestEncodingType.JSON and media_type.endswith("+json"):
        return
    if media_type != expected:
        sent = media_type or "without a Content-Type"
        raise HTTPException(
            status_code=415, detail=f"Send the body as {getattr(expected, 'value', expected)}, not {sent}."
        )
