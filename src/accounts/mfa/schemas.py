"""What goes over the wire for second factors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from accounts.users.schemas import NO_NUL, whole_string

TotpCode = Annotated[
    str,
    Meta(
        pattern=whole_string(r"[0-9]{6}"),
        description="The 6-digit code the authenticator app shows now.",
        examples=["123456"],
    ),
]
RecoveryCodeText = Annotated[
    str,
    Meta(
        min_length=12,
        max_length=20,
        pattern=whole_string(r"[A-Za-z0-9 -]+"),
        description="One of the recovery codes, as printed (case, spaces and dashes do not matter).",
        examples=["ABCD-EFGH-JKLM"],
    ),
]
Password = Annotated[str, Meta(min_length=1, max_length=128, pattern=NO_NUL, description="The current password.")]


class SecondFactors(Struct, kw_only=True):
    """Which second factors the user has."""

    totp: bool
    """An authenticator app is enrolled and confirmed."""
    totp_confirmed_at: datetime | None
    recovery_codes_left: int
    """Unused recovery codes."""


class TotpEnrolment(Struct, kw_only=True):
    """A new TOTP secret, shown once: put it into an authenticator app (or show `otpauth_uri` as a QR code), then
    confirm with a first code."""

    secret: str
    """The secret in base32, for typing it in."""
    otpauth_uri: str
    """`otpauth://totp/<issuer>:<account>?secret=...&issuer=...`: the content of the QR code."""
    digits: int
    period: int
    """Seconds each code lasts."""
    algorithm: str


class TotpConfirmation(Struct, kw_only=True, forbid_unknown_fields=True):
    code: TotpCode


class RecoveryCodes(Struct, kw_only=True):
    """Ten single-use recovery codes, shown once: each logs in once when the authenticator is lost."""

    recovery_codes: list[str]


class FactorProof(Struct, kw_only=True, forbid_unknown_fields=True):
    """The password and a second factor (a current code, or an unused recovery code): what turning TOTP off or
    making new recovery codes asks for."""

    password: Password
    code: TotpCode | UnsetType = UNSET
    recovery_code: RecoveryCodeText | UnsetType = UNSET


REQUEST_EXAMPLES: tuple[Struct, ...] = (
    TotpConfirmation(code="123456"),
    FactorProof(password="correct horse battery staple", code="123456"),  # noqa: S106 - an example
)
"""The example of each request body of this domain, for the OpenAPI document."""
