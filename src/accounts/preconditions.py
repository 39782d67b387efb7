"""Conditional requests (RFC 9110 section 13): ETags from a row's version, `If-Match` and `If-None-Match`.

An ETag is the version number in quotes. It is strong: it names the state of the resource, and a
JSON and a MessagePack body of the same state are the same resource (responses carry `Vary: Accept`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from accounts.media import NegotiatedResponse

_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
_MAX_HEADER = 1024


class PreconditionFailed(Exception):
    """412: the resource changed since the caller read it (its `If-Match` names another version)."""


class MalformedPrecondition(Exception):
    """400: an `If-Match` or `If-None-Match` header that is not `*` or a list of entity tags."""


IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        max_length=_MAX_HEADER,
        description="Apply the change only if the resource still has one of these ETags (else 412); `*` for any.",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-None-Match",
        max_length=_MAX_HEADER,
        description="Answer 304 with no body if the resource still has one of these ETags.",
    ),
]
NOT_MODIFIED = {
    HTTP_304_NOT_MODIFIED: ResponseSpec(None, description="The caller's copy (If-None-Match) is current; no body.")
}
ETAG_HEADER = ResponseHeader(
    name="ETag",
    documentation_only=True,
    description="The version of the resource, for If-Match and If-None-Match.",
    value='"3"',  # with documentation_only, the value only gives the header its schema (a string)
)


def etag(version: int) -> str:
    return f'"{version}"'


def _entity_tags(header: str) -> list[tuple[bool, str]]:
    """(weak, opaque tag) for each tag of the list; `*` is a tag of its own."""
    if header.strip() == "*":
        return [(False, "*")]
    tags, position = [], 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if match is None:
            raise MalformedPrecondition(f"{header!r} is not `*` or a comma-separated list of quoted entity tags.")
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    if not tags:
        raise MalformedPrecondition("An empty precondition header names no entity tag.")
    return tags


def if_match_versions(header: str | None) -> list[int] | None:
    """The versions an `If-Match` accepts, or None when any version will do (no header, or `*`).

    Matching is strong (RFC 9110 13.1.1): a weak tag matches nothing, nor does a tag this service never
    gives, so both leave an empty list and the change fails with 412.
    """
    if header is None:
        return None
    tags = _entity_tags(header)
    if tags == [(False, "*")]:
        return None
    return [int(tag) for weak, tag in tags if not weak and tag.isdigit() and len(tag) < 10]


def none_match(header: str | None, version: int) -> bool:
    """Whether `If-None-Match` names this version (weak comparison, RFC 9110 13.1.2), or is `*`."""
    if header is None:
        return False
    current = str(version)
    return any(tag in ("*", current) for _, tag in _entity_tags(header))


def tagged(content: Any, version: int, *, if_none_match: str | None = None) -> NegotiatedResponse:
    """`content` with its ETag, or 304 Not Modified (no body) when the caller already has this version."""
    headers = {"ETag": etag(version), "Vary": "Accept"}
    if none_match(if_none_match, version):
        return NegotiatedResponse(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return NegotiatedResponse(content, headers=headers)
