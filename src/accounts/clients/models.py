"""The service clients table: machines that authenticate with a client id and a secret or a signed JWT (OAuth 2.0
client credentials; RFC 7523 `private_key_jwt`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base


class OAuthClient(Base):
    """A service client; its `id` is the OAuth `client_id`. Only the SHA-256 of its secret is stored; during a
    rotation the previous secret's hash is kept too, and works until `previous_secret_expires_at`. `jwks` is the public
    JWK Set (accounts.clients.keys) its `private_key_jwt` assertions are verified with, None when it has none."""

    __tablename__ = "oauth_clients"

    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    previous_secret_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_by: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
