"""Tables of credentials: sessions and their refresh tokens, API keys, e-mailed tokens, revoked access tokens, the
second-factor challenges of logins and the client assertions already used."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base


class UserSession(Base):
    """A login and everything it led to: its rotation chain of refresh tokens (their `family_id` is the session's id)
    and the access tokens issued with them (their `sid` claim). Ending it revokes both, at once."""

    __tablename__ = "sessions"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    amr: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    """How the user authenticated (RFC 8176 values: `pwd`, `otp`, `mfa`, `hwk`, `user`, ...)."""
    user_agent: Mapped[str | None] = mapped_column(String(512))
    address: Mapped[str | None] = mapped_column(String(64))
    """The client address the login came from."""
    last_used_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), index=True)


class RefreshToken(Base):
    """One opaque refresh token, stored as its SHA-256. Each is used once; a rotation chain is a family, which is
    its session."""

    __tablename__ = "refresh_tokens"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class ApiKey(Base):
    """A service-to-service key: `acck_<prefix>_<secret>`; only the SHA-256 of the whole key is stored."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    created_by: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class EmailToken(Base):
    """A single-use token sent by e-mail, stored as its SHA-256: `verify` proves the address, `reset` sets a
    new password. It is bound to the address it was sent to, so it is worthless once the e-mail changes."""

    __tablename__ = "email_tokens"
    __table_args__ = (
        # At most one open reset token per user: a new request replaces it (and only the newest link works).
        Index(
            "ux_email_tokens_open_reset",
            "user_id",
            unique=True,
            postgresql_where=text("purpose = 'reset' AND used_at IS NULL"),
        ),
        Index("ix_email_tokens_expires_at", "expires_at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class RevokedToken(DefaultBase):
    """An access token revoked before it expires (RFC 7009), by its `jti`; kept until it would have expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)


class UsedClientAssertion(DefaultBase):
    """The `jti` of a service client's `private_key_jwt` assertion (RFC 7523) that was presented: it is refused if
    presented again, until it would have expired anyway."""

    __tablename__ = "client_assertions"

    client_id: Mapped[UUID] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), primary_key=True)
    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)


class MfaChallenge(Base):
    """A password login that still needs its second factor: the `mfa_token` (stored as its SHA-256) it was answered
    with, single-use and short-lived."""

    __tablename__ = "mfa_challenges"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    amr: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    """What the user proved so far (`pwd`)."""
    user_agent: Mapped[str | None] = mapped_column(String(512))
    address: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
