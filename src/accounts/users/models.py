"""The users table."""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, column, func, text
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base


class User(Base):
    """An account. E-mail addresses are stored lower-cased, so uniqueness is case-insensitive."""

    __tablename__ = "users"
    __table_args__ = (
        # `q` searches by prefix; text_pattern_ops lets LIKE 'abc%' use the index under any collation.
        Index("ix_users_email_pattern", "email", postgresql_ops={"email": "text_pattern_ops"}),
        Index("ix_users_username_pattern", "username", postgresql_ops={"username": "text_pattern_ops"}),
        Index(
            "ix_users_full_name_pattern",
            func.lower(column("full_name")).label("full_name_lower"),
            postgresql_ops={"full_name_lower": "text_pattern_ops"},
        ),
        Index("ix_users_created_at_id", "created_at", "id"),
        Index("ix_users_is_active_created_at_id", "is_active", "created_at", "id"),
    )

    email: Mapped[str] = mapped_column(String(254), unique=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    bio: Mapped[str | None] = mapped_column(Text)
    hashed_password: Mapped[str | None] = mapped_column(String(255), default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    """When the owner proved the address (`POST /auth/verify-email`); cleared by a trigger when it changes."""
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Bumped when a password changes or the user logs out everywhere: older access tokens stop working."""
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    """Bumped by a trigger on every update (migration 0004); the user's ETag."""


class UserCount(DefaultBase):
    """How many users are active and inactive, kept exact by triggers (migration 0003)."""

    __tablename__ = "user_counts"

    is_active: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    users: Mapped[int] = mapped_column(BigInteger)
