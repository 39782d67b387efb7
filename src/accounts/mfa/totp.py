"""The arithmetic of second factors: RFC 6238 time-based codes, recovery codes, and the sealing of TOTP secrets at
rest (AES-256-GCM under a key from configuration, bound to the user it belongs to)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from accounts.config import ConfigError, Settings
from accounts.core.security import read_or_create

TOTP_DIGITS = 6
TOTP_PERIOD = 30
TOTP_SECRET_BYTES = 20  # 160 bits: RFC 4226 section 4's recommendation, and what authenticator apps expect
TOTP_WINDOW = 1
"""Codes of the step before and after the current one are accepted too: clocks drift, people type slowly."""
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off paper, typed by hand
_RECOVERY_LENGTH = 12  # 60 bits each; the account's attempt limit does the rest
GENERATED_KEY_FILE = "mfa-encryption-key"
_NONCE_BYTES = 12
_KEY_ID_BYTES = 4


def new_totp_secret() -> bytes:
    return secrets.token_bytes(TOTP_SECRET_BYTES)


def base32(secret: bytes) -> str:
    """The secret as authenticator apps take it: base32 without padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def provisioning_uri(secret: bytes, account: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI a QR code carries (Google Authenticator's key URI format)."""
    return _totp(secret).get_provisioning_uri(account, issuer)


def matching_step(secret: bytes, code: str, now: float | None = None) -> int | None:
    """The time step (within the window around now) whose code is `code`, or None. Every candidate is compared, in
    constant time, so the answer's timing says nothing about which step matched."""
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    totp = _totp(secret)
    current = int((time.time() if now is None else now) // TOTP_PERIOD)
    found = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate(step * TOTP_PERIOD), code.encode()):
            found = step
    return found


def _totp(secret: bytes) -> TOTP:
    return TOTP(secret, TOTP_DIGITS, hashes.SHA1(), TOTP_PERIOD, enforce_key_length=False)  # noqa: S303 - RFC 6238


def new_recovery_codes() -> list[str]:
    """Ten single-use codes, `XXXX-XXXX-XXXX`, shown to the user once."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _RECOVERY_LENGTH, 4)))
    return codes


def recovery_code_hash(code: str) -> bytes:
    """SHA-256 of a recovery code as typed, ignoring case, spaces and dashes (60 random bits: a fast hash is enough)."""
    normalised = "".join(code.split()).replace("-", "").upper()
    return hashlib.sha256(normalised.encode()).digest()


class SecretSealer:
    """Seals TOTP secrets with AES-256-GCM. The first of MFA_ENCRYPTION_KEYS seals; every one of them opens, so keys
    rotate by putting the new one first. Each sealed value names its key (4 bytes of the key's SHA-256) and is bound
    to its user as associated data: a sealed secret copied to another user's row does not open."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = {hashlib.sha256(key).digest()[:_KEY_ID_BYTES]: AESGCM(key) for key in keys}
        self._sealing_id = hashlib.sha256(keys[0]).digest()[:_KEY_ID_BYTES]

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretSealer:
        if not settings.mfa_encryption_keys:
            return cls([base64.urlsafe_b64decode(_generated_key(settings.data_path / GENERATED_KEY_FILE))])
        keys = []
        for encoded in settings.mfa_encryption_keys.split(","):
            try:
                key = base64.urlsafe_b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4))
            except ValueError:
                key = b""
            if len(key) != 32:  # AES-256
                raise ConfigError("MFA_ENCRYPTION_KEYS: expected comma-separated base64url 32-byte keys")
            keys.append(key)
        return cls(keys)

    def seal(self, secret: bytes, user_id: UUID) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return self._sealing_id + nonce + self._keys[self._sealing_id].encrypt(nonce, secret, user_id.bytes)

    def open(self, sealed: bytes, user_id: UUID) -> bytes | None:
        """The secret, or None when no configured key opens it (a key removed too soon, or a tampered row)."""
        key = self._keys.get(sealed[:_KEY_ID_BYTES])
        nonce = sealed[_KEY_ID_BYTES : _KEY_ID_BYTES + _NONCE_BYTES]
        try:
            return key.decrypt(nonce, sealed[_KEY_ID_BYTES + _NONCE_BYTES :], user_id.bytes) if key else None
        except InvalidTag:
            return None


def _generated_key(path: Path) -> bytes:
    return read_or_create(path, lambda: base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)))
