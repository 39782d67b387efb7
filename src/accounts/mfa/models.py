"""Tables of second factors: a user's TOTP secret (sealed) and recovery codes (hashed)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, ForeignKey, LargeBinary, func
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base


class TotpFactor(DefaultBase):
    """A user's TOTP authenticator: at most one. Pending until a first code confirms it."""

    __tablename__ = "totp_factors"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary(64))
    """The secret, AES-GCM sealed (accounts.mfa.totp.SecretSealer): key id, nonce, ciphertext and tag."""
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    """The time step of the last code accepted: a code is never accepted twice, nor one older than it."""
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class RecoveryCode(Base):
    """One single-use recovery code, stored as its SHA-256."""

    __tablename__ = "recovery_codes"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
