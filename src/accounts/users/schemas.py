"""What goes over the wire for users: one Struct per use."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType


def whole_string(pattern: str) -> str:
    """Anchor `pattern` to the whole string (a bare `$` would also accept a trailing newline)."""
    return f"^(?:{pattern})(?!\\n)$"


ONE_LINE = whole_string(r"[^\x00-\x1f\x7f]*")
"""Text without control characters (NUL above all, which PostgreSQL cannot store): names, filters, logins."""

NO_NUL = whole_string(r"[^\x00]*")
"""Any text but NUL: passwords, which are only ever hashed (C libraries and clients cut a string at a NUL)."""

_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f]"
_EMAIL_LABEL = r"[^@\s\x00-\x1f\x7f.]"

Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=254,
        pattern=whole_string(rf"{_EMAIL_CHAR}+@{_EMAIL_LABEL}+(?:\.{_EMAIL_LABEL}+)+"),
        description="E-mail address; stored lower-cased and unique regardless of case.",
        examples=["ada@example.com"],
        extra_json_schema={"extra": {"format": "email"}},  # Litestar reads "extra",
    ),
]
Username = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=32,
        pattern=whole_string(r"[a-z0-9_.-]+"),
        description="3 to 32 of lower-case letters, digits, `_`, `.` and `-`; unique.",
        examples=["ada.lovelace"],
    ),
]
FullName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=ONE_LINE,
        description="Display name: one line, no control characters.",
        examples=["Ada Lovelace"],
    ),
]
Bio = Annotated[
    str,
    Meta(
        max_length=2000,
        pattern=whole_string(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*"),
        description="Free text; line breaks and tabs allowed, other control characters not.",
        examples=["Analyst of engines."],
    ),
]

Password = Annotated[
    str,
    Meta(
        min_length=8,
        max_length=128,
        pattern=NO_NUL,
        description="8 to 128 characters, any but NUL.",
        examples=["correct horse"],
    ),
]
PasswordGuess = Annotated[str, Meta(min_length=1, max_length=128, pattern=NO_NUL)]
"""A password as a caller tries it (to log in, or to confirm a change); one that no password can be is refused
before it counts as a failed attempt."""

UserSort = Literal["created_at", "-created_at", "email", "-email", "username", "-username"]


class UserCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    """A new user, made by an admin or a service; without a password the user cannot log in yet."""

    email: Email
    username: Username
    full_name: FullName | None = None
    bio: Bio | None = None
    password: Password | None = None


class ProfileUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    """A user's change to their own profile: only the fields present change; `null` clears a nullable field."""

    email: Email | UnsetType = UNSET
    username: Username | UnsetType = UNSET
    full_name: FullName | UnsetType | None = UNSET
    bio: Bio | UnsetType | None = UNSET


class UserUpdate(ProfileUpdate, kw_only=True, forbid_unknown_fields=True):
    """An admin's or a service's change to any user; `is_superuser` only by an admin, and neither flag on oneself."""

    is_active: bool | UnsetType = UNSET
    is_superuser: bool | UnsetType = UNSET


class UserRead(Struct, kw_only=True):
    """A user as clients see it (never the password hash)."""

    id: UUID
    email: str
    username: str
    full_name: str | None
    bio: str | None
    is_active: bool
    is_superuser: bool
    email_verified_at: Annotated[
        datetime | None, Meta(description="When the address was verified; null until then and after it changes.")
    ]
    created_at: datetime
    updated_at: datetime
    version: Annotated[int, Meta(description="Bumped on every change; the user's ETag is this number in quotes.")]


class UserPage(Struct, kw_only=True):
    """One page of users and the number of users that match the filters."""

    items: list[UserRead]
    total: int
    limit: int
    offset: int


BATCH_MAX = 500
"""How many users one `batchGetUsers` names at most: ids and e-mails together."""


class UserBatchGet(Struct, kw_only=True, forbid_unknown_fields=True):
    """Users to read at once, by id and by e-mail (any case): at least one, at most BATCH_MAX in all."""

    ids: Annotated[list[UUID], Meta(max_length=BATCH_MAX, description="User ids.")] = []
    emails: Annotated[list[Email], Meta(max_length=BATCH_MAX, description="E-mail addresses, any case.")] = []


class UserBatchMissing(Struct, kw_only=True):
    """What a batch asked for and did not get: each id and e-mail (lower-cased) once, in request order."""

    ids: list[UUID]
    emails: list[str]


class UserBatch(Struct, kw_only=True):
    """The users a batch found, each once, in request order (ids first, then e-mails), and what it did not find."""

    items: list[UserRead]
    missing: UserBatchMissing


class UserListQuery(Struct, kw_only=True):
    """The list endpoint's filters, sort and page, as the service takes them."""

    limit: int = 20
    offset: int = 0
    sort: UserSort = "-created_at"
    is_active: bool | None = None
    email: str | None = None
    q: str | None = None


ImportFormat = Literal["ndjson", "csv"]
OnDuplicate = Literal["skip", "update"]


class UserImportQuery(Struct, kw_only=True):
    """How to read an uploaded file and what to do with a row whose e-mail already belongs to a user."""

    format: ImportFormat
    on_duplicate: OnDuplicate = "skip"


class UserExportQuery(Struct, kw_only=True):
    """The list endpoint's filters and the file format of an export."""

    format: ImportFormat = "ndjson"
    is_active: bool | None = None
    email: str | None = None
    q: str | None = None


class UserExportRow(Struct, kw_only=True):
    """One user in an export file: the fields of `UserCreate` (without the password), so an export is an
    import file."""

    email: str
    username: str
    full_name: str | None
    bio: str | None


class RowError(Struct, kw_only=True):
    """One line of an import's error report: a row that was not imported, and why."""

    line: int
    """The row's line in the uploaded file (1 is the first line; a CSV header is line 1)."""
    error: str


REQUEST_EXAMPLES: tuple[Struct, ...] = (
    UserCreate(email="ada@example.com", username="ada.lovelace", full_name="Ada Lovelace", password="correct horse"),  # noqa: S106
    UserUpdate(full_name="Ada King", is_active=False),
    ProfileUpdate(full_name="Ada King", bio="Analyst of engines."),
    UserBatchGet(ids=[UUID("01936f3e-2a4b-7c3d-8e5f-a1b2c3d4e5f6")], emails=["ada@example.com"]),
)
"""The example of each request body of this domain, for the OpenAPI document."""
