"""Opaque secrets: refresh tokens, e-mailed tokens and API keys (stored and found by accounts.core.security's
`secret_hash`)."""

from __future__ import annotations

import re
import secrets

API_KEY_PREFIX = "acck_"
_API_KEY = re.compile(r"acck_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_email_token() -> str:
    """The secret of a verification or password-reset e-mail: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """A new key and its public prefix: `acck_<12 hex>_<43 url-safe characters>`."""
    prefix = secrets.token_hex(6)
    return prefix, f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def api_key_prefix(value: str) -> str | None:
    """The prefix of a well-formed API key, else None."""
    match = _API_KEY.fullmatch(value)
    return match.group(1) if match else None
