"""What goes over the wire for authentication: tokens, key sets, passwords and API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import Meta, Struct

from accounts.users.schemas import ONE_LINE, Bio, Email, FullName, Password, PasswordGuess, Username, whole_string

Scope = Literal["users:read", "users:write"]
RefreshTokenValue = Annotated[
    str, Meta(min_length=1, max_length=256, pattern=ONE_LINE, description="The opaque refresh token.")
]


class PasswordGrant(Struct, kw_only=True):
    """OAuth 2.0 resource-owner password grant (RFC 6749 section 4.3), form-encoded."""

    grant_type: Literal["password"]
    username: Annotated[
        str, Meta(min_length=1, max_length=254, pattern=ONE_LINE, description="E-mail address or username.")
    ]
    password: PasswordGuess
    scope: Annotated[str, Meta(max_length=1000, pattern=ONE_LINE)] = ""


class TokenPair(Struct, kw_only=True):
    """An access token (a JWT for the `Authorization: Bearer` header) and the refresh token that renews it."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    """Seconds until the access token expires."""
    refresh_token: str


class RefreshRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    refresh_token: RefreshTokenValue


class RegisterRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """A public sign-up."""

    email: Email
    username: Username
    password: Password
    full_name: FullName | None = None
    bio: Bio | None = None


class PasswordChange(Struct, kw_only=True, forbid_unknown_fields=True):
    current_password: PasswordGuess
    new_password: Password


EmailTokenValue = Annotated[
    str,
    Meta(
        min_length=16,
        max_length=128,
        pattern=whole_string(r"[A-Za-z0-9_-]+"),
        description="The token from the e-mail.",
        examples=["Qm9vbGVhbiBhbGdlYnJhIGlzIGZ1biwgaXNuJ3QgaXQ_"],
    ),
]


class EmailVerification(Struct, kw_only=True, forbid_unknown_fields=True):
    """The token of a verification e-mail, which proves the address belongs to the account."""

    token: EmailTokenValue


class PasswordResetRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Ask for a password-reset e-mail; the answer is the same whether or not the account exists."""

    email: Email


class PasswordResetConfirm(Struct, kw_only=True, forbid_unknown_fields=True):
    """The token of a password-reset e-mail and the new password."""

    token: EmailTokenValue
    new_password: Password


class Jwk(Struct, kw_only=True):
    """An Ed25519 public key as a JWK (RFC 8037)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    use: Literal["sig"]
    alg: Literal["EdDSA"]


class JwkSet(Struct, kw_only=True):
    """The public keys that verify access tokens; during a key rotation, more than one."""

    keys: list[Jwk]


class ApiKeyCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100, pattern=ONE_LINE)]
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=8)]
    expires_at: Annotated[datetime, Meta(tz=True, description="RFC 3339 with an offset.")] | None = None


class ApiKeyRead(Struct, kw_only=True):
    id: UUID
    name: str
    prefix: str
    """The public start of the key (`acck_<prefix>_...`), to recognise it in logs and lists."""
    scopes: list[str]
    created_by: UUID | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead, kw_only=True):
    key: str
    """The secret key. It is shown only in this response: store it now."""


class ApiKeyList(Struct, kw_only=True):
    items: list[ApiKeyRead]


_TOKEN = "Qm9vbGVhbiBhbGdlYnJhIGlzIGZ1biwgaXNuJ3QgaXQ_"  # noqa: S105 - an example
REQUEST_EXAMPLES: tuple[Struct, ...] = (
    RegisterRequest(email="ada@example.com", username="ada.lovelace", password="correct horse"),  # noqa: S106
    PasswordGrant(grant_type="password", username="ada@example.com", password="correct horse"),  # noqa: S106
    RefreshRequest(refresh_token="m4VXq3Wc0oGugJ2u8y8gVj3qXy4l0J1nq0sBGxkEw9E"),  # noqa: S106
    PasswordChange(current_password="correct horse", new_password="battery staple"),  # noqa: S106
    EmailVerification(token=_TOKEN),
    PasswordResetRequest(email="ada@example.com"),
    PasswordResetConfirm(token=_TOKEN, new_password="battery staple"),  # noqa: S106
    ApiKeyCreate(name="billing-service", scopes=["users:read"], expires_at=datetime(2099, 1, 1, tzinfo=UTC)),
)
"""The example of each request body of this domain, for the OpenAPI document."""
