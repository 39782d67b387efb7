"""What goes over the wire for authentication: tokens, key sets, passwords and API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType

from accounts.core.errors import OAuthProblem
from accounts.core.security import Scope
from accounts.passkeys.schemas import AuthenticationResponseJSON, AuthenticatorAssertionResponseJSON
from accounts.users.schemas import (
    NO_NUL,
    ONE_LINE,
    Bio,
    Email,
    FullName,
    Password,
    PasswordGuess,
    Username,
    whole_string,
)

ClientAssertionType = Annotated[
    str,
    Meta(
        max_length=100,
        pattern=ONE_LINE,
        description="`urn:ietf:params:oauth:client-assertion-type:jwt-bearer` with a `client_assertion` "
        "(`private_key_jwt`, RFC 7523).",
    ),
]
ClientAssertion = Annotated[
    str,
    Meta(
        max_length=8192,
        pattern=ONE_LINE,
        description="A JWT the client signed with one of its registered keys (RFC 7523 section 3); each works once.",
    ),
]
RefreshTokenValue = Annotated[
    str, Meta(min_length=1, max_length=256, pattern=ONE_LINE, description="The opaque refresh token.")
]


class TokenRequest(Struct, kw_only=True):
    """A token request (RFC 6749), form-encoded: `grant_type` says which of the other fields it needs.

    `password` (section 4.3): `username` and `password`; `refresh_token` (section 6): `refresh_token`;
    `client_credentials` (section 4.4): the client authenticates with HTTP Basic, `client_id` and `client_secret`, or
    `client_assertion_type` and `client_assertion` (`private_key_jwt`);
    `http://auth0.com/oauth/grant-type/mfa-otp`: `mfa_token` and `otp`; `.../mfa-recovery-code`: `mfa_token` and
    `recovery_code` (the second step of a login that answered `mfa_required`).
    """

    grant_type: Annotated[str, Meta(max_length=100, pattern=ONE_LINE, examples=["client_credentials"])]
    username: Annotated[str, Meta(max_length=254, pattern=ONE_LINE, description="E-mail address or username.")] = ""
    password: Annotated[str, Meta(max_length=128, pattern=NO_NUL)] = ""
    refresh_token: Annotated[str, Meta(max_length=256, pattern=ONE_LINE)] = ""
    scope: Annotated[str, Meta(max_length=1000, pattern=ONE_LINE)] = ""
    client_id: Annotated[str, Meta(max_length=100, pattern=ONE_LINE)] = ""
    client_secret: Annotated[str, Meta(max_length=256, pattern=ONE_LINE)] = ""
    client_assertion_type: ClientAssertionType = ""
    client_assertion: ClientAssertion = ""
    mfa_token: Annotated[str, Meta(max_length=256, pattern=ONE_LINE, description="A second-factor challenge's.")] = ""
    otp: Annotated[str, Meta(max_length=6, pattern=whole_string("[0-9]*"), description="A TOTP code.")] = ""
    recovery_code: Annotated[str, Meta(max_length=20, pattern=whole_string("[A-Za-z0-9 -]*"))] = ""


MfaToken = Annotated[
    str,
    Meta(min_length=1, max_length=256, pattern=ONE_LINE, description="The `mfa_token` of an `mfa_required` answer."),
]


class PasskeyLoginStart(Struct, kw_only=True, forbid_unknown_fields=True):
    """Ask for a passkey sign-in's options: without `mfa_token` a passwordless, usernameless login (the browser offers
    the passkeys it holds for this site); with it, the second step of a password login."""

    mfa_token: MfaToken | UnsetType = UNSET


class PasskeyLogin(Struct, kw_only=True, forbid_unknown_fields=True):
    """The browser's answer (`navigator.credentials.get`, as AuthenticationResponseJSON) to the options of
    `startPasskeyLogin`, with the same `mfa_token` if one was given there."""

    challenge_id: UUID
    credential: AuthenticationResponseJSON
    mfa_token: MfaToken | UnsetType = UNSET


class MfaRequired(OAuthProblem, kw_only=True):
    """403 from a password login whose user has a second factor (as Auth0's MFA grant answers): send the
    `mfa_token` with a code to the token endpoint (`grant_type=http://auth0.com/oauth/grant-type/mfa-otp` with `otp`,
    or `.../mfa-recovery-code` with `recovery_code`) within `expires_in` seconds."""

    mfa_token: str
    expires_in: int
    mfa_methods: list[str]
    """The second factors the user can answer with: `otp`, `recovery_code`, `passkey`."""


class SessionRead(Struct, kw_only=True):
    """A login that still works: its refresh token renews it, its access tokens are accepted."""

    id: UUID
    created_at: datetime
    """When the user logged in."""
    last_used_at: datetime
    """When its refresh token was last used (or the login, if never)."""
    user_agent: str | None
    address: str | None
    """The client address of the login."""
    amr: list[str]
    """How the user authenticated (RFC 8176): `pwd`; `pwd otp mfa`, `pwd rc mfa` with a second factor;
    `hwk user mfa` with a passkey."""
    current: bool
    """The session the calling token belongs to."""


class SessionList(Struct, kw_only=True):
    items: list[SessionRead]


class TokenPair(Struct, kw_only=True):
    """An access token (a JWT for the `Authorization: Bearer` header) and the refresh token that renews it."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    """Seconds until the access token expires."""
    refresh_token: str


class TokenResponse(Struct, kw_only=True, omit_defaults=True):
    """A successful token response (RFC 6749 section 5.1). A client-credentials grant gets no refresh token."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    """Seconds until the access token expires."""
    refresh_token: str | UnsetType = UNSET
    scope: str | UnsetType = UNSET
    """The scopes granted, space-separated (client credentials)."""


class TokenIntrospectionRequest(Struct, kw_only=True):
    """RFC 7662 section 2.1; the caller authenticates as a client (or with an API key) holding `tokens:introspect`."""

    token: Annotated[str, Meta(min_length=1, max_length=4096, pattern=ONE_LINE)]
    token_type_hint: Annotated[str, Meta(max_length=100, pattern=ONE_LINE)] = ""
    client_id: Annotated[str, Meta(max_length=100, pattern=ONE_LINE)] = ""
    client_secret: Annotated[str, Meta(max_length=256, pattern=ONE_LINE)] = ""
    client_assertion_type: ClientAssertionType = ""
    client_assertion: ClientAssertion = ""


class TokenRevocationRequest(TokenIntrospectionRequest, kw_only=True):
    """RFC 7009 section 2.1: a user's tokens need no client authentication; a client's tokens need that client's."""


class TokenIntrospection(Struct, kw_only=True, omit_defaults=True):
    """RFC 7662 section 2.2: `active` says whether the token works now; the claims follow only when it does."""

    active: bool
    scope: str | UnsetType = UNSET
    client_id: str | UnsetType = UNSET
    token_type: str | UnsetType = UNSET
    exp: int | UnsetType = UNSET
    iat: int | UnsetType = UNSET
    sub: str | UnsetType = UNSET
    aud: str | UnsetType = UNSET
    iss: str | UnsetType = UNSET
    jti: str | UnsetType = UNSET


class UserInfo(Struct, kw_only=True, omit_defaults=True):
    """OpenID Connect Core section 5.3: the calling user's standard claims."""

    sub: str
    email: str
    email_verified: bool
    preferred_username: str
    name: str | UnsetType = UNSET
    updated_at: int | UnsetType = UNSET


class ServerMetadata(Struct, kw_only=True, omit_defaults=True):
    """The authorization server's metadata (RFC 8414), also served as the OpenID Provider configuration."""

    issuer: str
    token_endpoint: str
    jwks_uri: str
    introspection_endpoint: str
    revocation_endpoint: str
    userinfo_endpoint: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    token_endpoint_auth_signing_alg_values_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_signing_alg_values_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_signing_alg_values_supported: list[str]
    scopes_supported: list[str]
    response_types_supported: list[str]
    subject_types_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    claims_supported: list[str]
    service_documentation: str | UnsetType = UNSET


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
    TokenRequest(grant_type="client_credentials", scope="users:read"),
    TokenIntrospectionRequest(token="eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl", token_type_hint="access_token"),  # noqa: S106
    TokenRevocationRequest(token="m4VXq3Wc0oGugJ2u8y8gVj3qXy4l0J1nq0sBGxkEw9E", token_type_hint="refresh_token"),  # noqa: S106
    RefreshRequest(refresh_token="m4VXq3Wc0oGugJ2u8y8gVj3qXy4l0J1nq0sBGxkEw9E"),  # noqa: S106
    PasswordChange(current_password="correct horse", new_password="battery staple"),  # noqa: S106
    EmailVerification(token=_TOKEN),
    PasswordResetRequest(email="ada@example.com"),
    PasswordResetConfirm(token=_TOKEN, new_password="battery staple"),  # noqa: S106
    ApiKeyCreate(name="billing-service", scopes=["users:read"], expires_at=datetime(2099, 1, 1, tzinfo=UTC)),
    PasskeyLoginStart(),
    PasskeyLogin(
        challenge_id=UUID("01936f3e-5c2a-7b1e-9a4d-3f0c2b1a0e9d"),
        credential=AuthenticationResponseJSON(
            id="dGhlIGNyZWRlbnRpYWwgaWQgb2YgMzIgYnl0ZXMhIQ",
            raw_id="dGhlIGNyZWRlbnRpYWwgaWQgb2YgMzIgYnl0ZXMhIQ",
            type="public-key",
            response=AuthenticatorAssertionResponseJSON(
                client_data_json="eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0",
                authenticator_data="SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MFAAAAAQ",
                signature="MEUCIQDexampleexampleexampleexampleexampleexample",
                user_handle="AZNvPlwqex6aTT8MKxoOnQ",
            ),
        ),
    ),
)
"""The example of each request body of this domain, for the OpenAPI document."""
