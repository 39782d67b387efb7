"""What goes over the wire for users: one Struct per use."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType


def _whole(pattern: str) -> str:
    """Anchor `pattern` to the whole string (a bare `$` would also accept a trailing newline)."""
    return f"^(?:{pattern})(?!\\n)$"


_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f]"
_EMAIL_LABEL = r"[^@\s\x00-\x1f\x7f.]"

Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=254,
        pattern=_whole(rf"{_EMAIL_CHAR}+@{_EMAIL_LABEL}+(?:\.{_EMAIL_LABEL}+)+"),
        description="E-mail address; stored lower-cased and unique regardless of case.",
        examples=["ada@example.com"],
        extra_json_schema={"format": "email"},
    ),
]
Username = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=32,
        pattern=_whole(r"[a-z0-9_.-]+"),
        description="3 to 32 of lower-case letters, digits, `_`, `.` and `-`; unique.",
        examples=["ada.lovelace"],
    ),
]
FullName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=_whole(r"[^\x00-\x1f\x7f]+"),
        description="Display name: one line, no control characters.",
        examples=["Ada Lovelace"],
    ),
]
Bio = Annotated[
    str,
    Meta(
        max_length=2000,
        pattern=_whole(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*"),
        description="Free text; line breaks and tabs allowed, other control characters not.",
        examples=["Analyst of engines."],
    ),
]

UserSort = Literal["created_at", "-created_at", "email", "-email", "username", "-username"]


class UserCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    """A new user."""

    email: Email
    username: Username
    full_name: FullName | None = None
    bio: Bio | None = None


class UserUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial update: only the fields present change; `null` clears a nullable field."""

    email: Email | UnsetType = UNSET
    username: Username | UnsetType = UNSET
    full_name: FullName | UnsetType | None = UNSET
    bio: Bio | UnsetType | None = UNSET
    is_active: bool | UnsetType = UNSET


class UserRead(Struct, kw_only=True):
    """A user as clients see it (never the password hash)."""

    id: UUID
    email: str
    username: str
    full_name: str | None
    bio: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime


class UserPage(Struct, kw_only=True):
    """One page of users and the number of users that match the filters."""

    items: list[UserRead]
    total: int
    limit: int
    offset: int


class UserListQuery(Struct, kw_only=True):
    """The list endpoint's filters, sort and page, as the service takes them."""

    limit: int = 20
    offset: int = 0
    sort: UserSort = "-created_at"
    is_active: bool | None = None
    email: str | None = None
    q: str | None = None
