"""What goes over the wire for service clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType

from accounts.core.security import Scope
from accounts.users.schemas import ONE_LINE, whole_string

DAY = 86_400
MAX_CLIENT_KEYS = 10

Base64Url = Annotated[str, Meta(min_length=1, max_length=2048, pattern=whole_string("[A-Za-z0-9_-]+"))]
AssertionAlgorithm = Literal["EdDSA", "ES256", "RS256", "PS256"]
"""The algorithms a client assertion may be signed with: never `none`, never an HMAC (`HS256`...)."""


class ClientJwk(Struct, kw_only=True, forbid_unknown_fields=True):
    """A public key of a service client (RFC 7517): OKP `Ed25519` (`x`), EC `P-256` (`x`, `y`) or RSA of 2048 bits
    or more (`n`, `e`). Private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`), symmetric keys (`oct`) and
    certificates are refused."""

    kty: Literal["OKP", "EC", "RSA"]
    kid: Annotated[str, Meta(min_length=1, max_length=100, pattern=ONE_LINE)] | UnsetType = UNSET
    """Names the key in an assertion's `kid` header (without one, every key of the right type is tried)."""
    use: Literal["sig"] | UnsetType = UNSET
    key_ops: Annotated[list[Literal["verify"]], Meta(max_length=1)] | UnsetType = UNSET
    alg: AssertionAlgorithm | UnsetType = UNSET
    """The one algorithm the key verifies (without it: EdDSA, ES256, or RS256 and PS256 for RSA)."""
    crv: Literal["Ed25519", "P-256"] | UnsetType = UNSET
    x: Base64Url | UnsetType = UNSET
    y: Base64Url | UnsetType = UNSET
    n: Base64Url | UnsetType = UNSET
    e: Annotated[str, Meta(min_length=1, max_length=8, pattern=whole_string("[A-Za-z0-9_-]+"))] | UnsetType = UNSET


class ClientJwkSet(Struct, kw_only=True, forbid_unknown_fields=True):
    """The public keys that verify a client's `private_key_jwt` assertions (RFC 7523); empty: none."""

    keys: Annotated[list[ClientJwk], Meta(max_length=MAX_CLIENT_KEYS)]


class OAuthClientCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100, pattern=ONE_LINE)]
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=8)]
    """What the client may ask for; a token request naming no scope gets all of them."""
    jwks: ClientJwkSet | None = None
    """Public keys for `private_key_jwt`: the client may then authenticate with JWTs it signs instead of its secret."""


class OAuthClientRead(Struct, kw_only=True):
    client_id: UUID
    name: str
    scopes: list[str]
    created_by: UUID | None
    created_at: datetime
    secret_rotated_at: datetime | None
    previous_secret_expires_at: datetime | None
    """Until then the secret before the last rotation works too; None when it no longer does."""
    jwks: ClientJwkSet | None
    """The public keys its `private_key_jwt` assertions are verified with; None when it has none."""


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
    ClientJwkSet(
        keys=[ClientJwk(kty="OKP", crv="Ed25519", kid="billing-2026", x="11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")]
    ),
)
"""The example of each request body of this domain, for the OpenAPI document."""
