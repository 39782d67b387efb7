"""What goes over the wire for service clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from msgspec import Meta, Struct

from accounts.core.security import Scope
from accounts.users.schemas import ONE_LINE

DAY = 86_400


class OAuthClientCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100, pattern=ONE_LINE)]
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=8)]
    """What the client may ask for; a token request naming no scope gets all of them."""


class OAuthClientRead(Struct, kw_only=True):
    client_id: UUID
    name: str
    scopes: list[str]
    created_by: UUID | None
    created_at: datetime
    secret_rotated_at: datetime | None
    previous_secret_expires_at: datetime | None
    """Until then the secret before the last rotation works too; None when it no longer does."""


class OAuthClientCreated(OAuthClientRead, kw_only=True):
    client_secret: str
    """The secret (`accs_...`). It is shown only in this response: store it now."""


class OAuthClientList(Struct, kw_only=True):
    items: list[OAuthClientRead]


class SecretRotation(Struct, kw_only=True, forbid_unknown_fields=True):
    overlap_seconds: Annotated[int, Meta(ge=0, le=30 * DAY)] = DAY
    """How long the current secret keeps working beside the new one (0: it stops at once)."""


REQUEST_EXAMPLES: tuple[Struct, ...] = (
    OAuthClientCreate(name="billing-service", scopes=["users:read", "tokens:introspect"]),
    SecretRotation(overlap_seconds=3600),
)
"""The example of each request body of this domain, for the OpenAPI document."""
