"""The passkeys table (a user's WebAuthn credentials) and the single-use challenges of their ceremonies."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, LargeBinary, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base

REGISTRATION = "registration"
AUTHENTICATION = "authentication"


class Passkey(Base):
    """A WebAuthn public-key credential of a user. The private key never leaves the authenticator; this row holds
    what verifies its assertions: the COSE public key and the last signature counter it reported."""

    __tablename__ = "passkeys"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    """The authenticator's id of the credential (at most 1023 bytes, WebAuthn section 5.1)."""
    public_key: Mapped[bytes] = mapped_column(LargeBinary(2048))
    """The credential's public key, COSE-encoded, as the registration's attested credential data carried it."""
    sign_count: Mapped[int] = mapped_column(BigInteger)
    """The signature counter of the last accepted assertion (0: the authenticator keeps none)."""
    transports: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    """How the browser may reach the authenticator (`internal`, `hybrid`, `usb`, ...), as it reported them."""
    aaguid: Mapped[UUID]
    """The authenticator model's AAGUID (all zeros when it does not say)."""
    backup_eligible: Mapped[bool] = mapped_column(Boolean)
    """The credential may be synced to other devices (a multi-device passkey)."""
    backed_up: Mapped[bool] = mapped_column(Boolean)
    """It is synced (backed up) now, as its last ceremony reported."""
    name: Mapped[str] = mapped_column(String(100))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class WebAuthnChallenge(Base):
    """The challenge of one ceremony, spent by the one statement that deletes it (so it works once), until
    `expires_at`. A registration's is bound to its user; an authentication's to the user it is for, or to none
    (a usernameless sign-in with a discoverable credential)."""

    __tablename__ = "webauthn_challenges"
    __table_args__ = (CheckConstraint(f"purpose IN ('{REGISTRATION}', '{AUTHENTICATION}')", name="purpose"),)

    purpose: Mapped[str] = mapped_column(String(16))
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64))
    user_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
