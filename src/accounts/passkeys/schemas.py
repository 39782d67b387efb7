"""What goes over the wire for passkeys: the options of a ceremony, the browser's answer to it, and the passkeys.

The credential types are WebAuthn Level 3's JSON forms (`RegistrationResponseJSON`, `AuthenticationResponseJSON`:
what `PublicKeyCredential.toJSON()` returns, binary fields as unpadded base64url). They accept members they do not
name, because browsers add members to them (Level 3 added `publicKey` and `authenticatorData`); what they do name is
checked while decoding: base64url alphabet, sizes, types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from msgspec import Meta, Struct, field

from accounts.users.schemas import ONE_LINE, whole_string

BASE64URL = whole_string(r"[A-Za-z0-9_-]*")


def base64url(max_bytes: int, *, min_bytes: int = 0) -> Meta:
    """The limits of unpadded base64url of `min_bytes` to `max_bytes` bytes."""
    return Meta(
        min_length=(4 * min_bytes + 2) // 3,
        max_length=(4 * max_bytes + 2) // 3,
        pattern=BASE64URL,
        description=f"Unpadded base64url of at most {max_bytes} bytes.",
    )


# WebAuthn section 5.1: a credential id has at least 16 bytes of entropy, at most 1023 bytes.
CredentialId = Annotated[str, base64url(1023, min_bytes=16)]
ClientDataJSON = Annotated[str, base64url(8192)]
AttestationObject = Annotated[str, base64url(32_768)]
AuthenticatorData = Annotated[str, base64url(4096, min_bytes=37)]  # rpIdHash, flags and counter: 37 bytes at least
Signature = Annotated[str, base64url(1024)]
UserHandle = Annotated[str, base64url(64)]  # WebAuthn section 5.4.3: at most 64 bytes
Transport = Annotated[str, Meta(min_length=1, max_length=32, pattern=whole_string(r"[a-z0-9-]+"))]
PasskeyName = Annotated[
    str,
    Meta(min_length=1, max_length=100, pattern=ONE_LINE, description="What the user calls it.", examples=["Laptop"]),
]


class AuthenticatorAttestationResponseJSON(Struct, kw_only=True):
    client_data_json: ClientDataJSON = field(name="clientDataJSON")
    attestation_object: AttestationObject = field(name="attestationObject")
    transports: Annotated[list[Transport], Meta(max_length=16)] = []


class PublicKeyCredentialJSON(Struct, kw_only=True):
    """What the browser's answers to both ceremonies share: the members of `PublicKeyCredential.toJSON()` besides
    `response`."""

    id: CredentialId
    raw_id: CredentialId = field(name="rawId")
    type: Literal["public-key"]
    authenticator_attachment: Literal["platform", "cross-platform"] | None = field(
        name="authenticatorAttachment", default=None
    )
    client_extension_results: dict[str, Any] = field(name="clientExtensionResults", default_factory=dict)


class RegistrationResponseJSON(PublicKeyCredentialJSON, kw_only=True):
    """The browser's answer to `navigator.credentials.create()`, as `PublicKeyCredential.toJSON()` gives it."""

    response: AuthenticatorAttestationResponseJSON


class AuthenticatorAssertionResponseJSON(Struct, kw_only=True):
    client_data_json: ClientDataJSON = field(name="clientDataJSON")
    authenticator_data: AuthenticatorData = field(name="authenticatorData")
    signature: Signature
    user_handle: UserHandle | None = field(name="userHandle", default=None)


class AuthenticationResponseJSON(PublicKeyCredentialJSON, kw_only=True):
    """The browser's answer to `navigator.credentials.get()`, as `PublicKeyCredential.toJSON()` gives it."""

    response: AuthenticatorAssertionResponseJSON


class PasskeyOptions(Struct, kw_only=True):
    """The options of one ceremony: pass `options` to the browser (`PublicKeyCredential.parseCreationOptionsFromJSON`
    or `parseRequestOptionsFromJSON`), then send its answer back with `challenge_id`."""

    challenge_id: UUID
    """Names the ceremony's challenge, which works once, for WEBAUTHN_CHALLENGE_TTL seconds."""
    options: dict[str, Any]
    """`PublicKeyCredentialCreationOptionsJSON` (registration) or `PublicKeyCredentialRequestOptionsJSON` (sign-in):
    binary members as unpadded base64url."""


class PasskeyRegistration(Struct, kw_only=True, forbid_unknown_fields=True):
    challenge_id: UUID
    """The `challenge_id` of the registration options the browser answered."""
    credential: RegistrationResponseJSON
    name: PasskeyName | None = None
    """What to call it; by default `Passkey of <date and time, UTC>`."""


class PasskeyUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    name: PasskeyName


class PasskeyRead(Struct, kw_only=True):
    id: UUID
    name: str
    credential_id: str
    """The credential's id (base64url), as `navigator.credentials` names it."""
    aaguid: UUID
    """The authenticator model (all zeros when it does not say)."""
    transports: list[str]
    backup_eligible: bool
    """The passkey may be synced to the user's other devices."""
    backed_up: bool
    """It is synced now, as its last use reported."""
    created_at: datetime
    last_used_at: datetime | None


class PasskeyList(Struct, kw_only=True):
    items: list[PasskeyRead]


_EXAMPLE_CHALLENGE = UUID("01936f3e-2a4b-7c3d-8e5f-a1b2c3d4e5f6")
REQUEST_EXAMPLES: tuple[Struct, ...] = (
    PasskeyRegistration(
        challenge_id=_EXAMPLE_CHALLENGE,
        credential=RegistrationResponseJSON(
            id="hNt2Sjlbr8gQ0NXc3Bd4sA",
            raw_id="hNt2Sjlbr8gQ0NXc3Bd4sA",
            type="public-key",
            response=AuthenticatorAttestationResponseJSON(
                client_data_json="eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0",
                attestation_object="o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YVgl",
                transports=["internal", "hybrid"],
            ),
            authenticator_attachment="platform",
            client_extension_results={"credProps": {"rk": True}},
        ),
        name="Laptop",
    ),
    PasskeyUpdate(name="Work laptop"),
)
"""The example of each request body of this domain, for the OpenAPI document."""
