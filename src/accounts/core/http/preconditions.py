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

from accounts.core.errors import FieldError, MalformedRequest
from accounts.core.http.media import NegotiatedResponse

# One element of an entity-tag list: optional white space, a tag (or nothing), then a comma or the end.
_LIST_ELEMENT = re.compile(r'[ \t]*(?:(?P<weak>W/)?"(?P<tag>[\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(?:,|\Z)')
_VERSION_TAG = re.compile(r"0|[1-9][0-9]{0,9}")  # exactly what etag() gives: no sign, no leading zero
_MAX_VERSION = 2**31 - 1  # users.version is an integer column
_MAX_HEADER = 1024


class MalformedPrecondition(MalformedRequest):
    """400: an `If-Match` or `If-None-Match` header that is not `*` or a list of entity tags."""

    def __init__(self, header: str, detail: str) -> None:
        super().__init__(
            detail, errors=[FieldError(field=header, message="is not `*` or a list of quoted entity tags")]
        )


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


def _entity_tags(header: str, name: str) -> list[tuple[bool, str]] | None:
    """(weak, opaque tag) for each tag of the list, or None for `*` (any version).

    Empty list elements are ignored, as RFC 9110 5.6.1.2 asks of recipients.
    """
    if header.strip() == "*":
        return None
    tags, position = [], 0
    while position < len(header):
        match = _LIST_ELEMENT.match(header, position)
        if match is None:
            raise MalformedPrecondition(name, f"{header!r} is not `*` or a comma-separated list of quoted entity tags.")
        if match.group("tag") is not None:
            tags.append((match.group("weak") is not None, match.group("tag")))
        position = match.end()
    if not tags:
        raise MalformedPrecondition(name, "A precondition header must name at least one entity tag, or be `*`.")
    return tags


def if_match_versions(header: str | None) -> list[int] | None:
    """The versions an `If-Match` accepts, or None when any version will do (no header, or `*`).

    Matching is strong and exact (RFC 9110 13.1.1): a weak tag matches nothing, nor does a tag this
    service never gives (`"02"`, `"abc"`), so both leave an empty list and the change fails with 412.
    """
    tags = None if header is None else _entity_tags(header, "If-Match")
    if tags is None:
        return None
    return [int(tag) for weak, tag in tags if not weak and _VERSION_TAG.fullmatch(tag) and int(tag) <= _MAX_VERSION]


def none_match(header: str | None, version: int) -> bool:
    """Whether `If-None-Match` is `*` or names this version (weak comparison, RFC 9110 13.1.2)."""
    if header is None:
        return False
    tags = _entity_tags(header, "If-None-Match")
    current = str(version)
    return tags is None or any(tag == current for _, tag in tags)


def tagged(content: Any, version: int, *, if_none_match: str | None = None) -> NegotiatedResponse:
    """`content` with its ETag, or 304 Not Modified (no body) when the caller already has this version."""
    headers = {"ETag": etag(version), "Vary": "Accept"}
    if none_match(if_none_match, version):
        return NegotiatedResponse(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return NegotiatedResponse(content, headers=headers)
