"""Standard Webhooks signatures (https://www.standardwebhooks.com): secrets and the `webhook-signature` header.

A secret is 32 random bytes, shown as `whsec_<base64>`; the signature of a message is the base64 HMAC-SHA256 of
`<webhook-id>.<webhook-timestamp>.<body>` under it, sent as `v1,<signature>`. During a secret rotation's overlap a
message carries one signature per secret, space-separated, so a receiver with either verifies it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105 - the public start of every secret, not one
SECRET_BYTES = 32


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def secret_text(key: bytes) -> str:
    """The secret as a receiver configures it: `whsec_` and the key in base64."""
    return SECRET_PREFIX + base64.b64encode(key).decode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(keys: Iterable[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,` signature per key, space-separated."""
    return " ".join(signature(key, message_id, timestamp, body) for key in keys)
