"""The Ed25519 keys that sign access tokens, and the JWK Set that publishes them."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.signing import SigningKey

from accounts.auth.schemas import Jwk, JwkSet
from accounts.config import ConfigError, Settings
from accounts.core.security import read_or_create

GENERATED_KEY_FILE = "jwt-signing-key.pem"


def b64url(data: bytes) -> bytes:
    """JOSE's base64url: URL-safe base64 without padding (RFC 7515 section 2), for JWK members and JWS segments."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _jwk(public_key: Ed25519PublicKey) -> Jwk:
    x = b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    # RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order, no white space.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return Jwk(
        kty="OKP",
        crv="Ed25519",
        use="sig",
        alg="EdDSA",
        x=x,
        kid=b64url(hashlib.sha256(canonical.encode()).digest()).decode(),
    )


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The key that signs new tokens, and every public key (current and retired) that verifies them."""

    signer: SigningKey
    """The signing key in libsodium's hands: it signs in about half the time OpenSSL takes (Ed25519 signatures are
    deterministic, so the tokens are the same byte for byte)."""
    signing_kid: str
    verify_keys: dict[str, Ed25519PublicKey]
    jwks: JwkSet

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        signing_key = _load_private(_signing_key_pem(settings), "JWT_SIGNING_KEY")
        retired = filter(None, (path.strip() for path in settings.jwt_verify_key_files.split(",")))
        public_keys = [signing_key.public_key()]
        public_keys += [_load_public(_read(path, "JWT_VERIFY_KEY_FILES"), "JWT_VERIFY_KEY_FILES") for path in retired]
        jwks = [_jwk(key) for key in public_keys]
        return cls(
            signer=SigningKey(signing_key.private_bytes_raw()),
            signing_kid=jwks[0].kid,
            verify_keys={jwk.kid: key for jwk, key in zip(jwks, public_keys, strict=True)},
            jwks=JwkSet(keys=jwks),
        )


def _signing_key_pem(settings: Settings) -> bytes:
    if settings.jwt_signing_key:
        return settings.jwt_signing_key.encode()
    if settings.jwt_signing_key_file:
        return _read(settings.jwt_signing_key_file, "JWT_SIGNING_KEY_FILE")
    return _generated_key(settings.data_path / GENERATED_KEY_FILE)


def _generated_key(path: Path) -> bytes:
    return read_or_create(
        path,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _read(path: str, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path!r} ({exc.strerror})") from None


def _load_private(pem: bytes, variable: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{variable}: expected an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{variable}: expected an Ed25519 key (openssl genpkey -algorithm ed25519)")
    return key


def _load_public(pem: bytes, variable: str) -> Ed25519PublicKey:
    """A retired key may be given as its private or its public PEM."""
    if b"PRIVATE KEY" in pem:
        return _load_private(pem, variable).public_key()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ConfigError(f"{variable}: expected a PEM public or private key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{variable}: expected an Ed25519 key")
    return key
