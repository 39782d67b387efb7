"""Access tokens: short-lived EdDSA-signed JWTs that any service can verify with the published JWK Set."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt
import msgspec

from accounts.auth.keys import SigningKeys, b64url
from accounts.config import Settings
from accounts.core.security import ADMIN_SCOPES

ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 30
MAX_ACCESS_TOKEN_TTL = 86_400
"""The longest ACCESS_TOKEN_TTL allowed: how long an ended session's tokens can still be around."""
VERIFIED_CACHE_SIZE = 10_000


ACR_ONE_FACTOR = "urn:accounts:acr:1fa"
ACR_TWO_FACTORS = "urn:accounts:acr:2fa"
"""`acr` of a token: a password alone, or two factors (a password and a code, or a passkey that verified its user)."""


def assurance(amr: list[str]) -> str:
    return ACR_TWO_FACTORS if "mfa" in amr else ACR_ONE_FACTOR


_CLAIMS = msgspec.json.Encoder()


class InvalidTokenError(Exception):
    """The token is not one this service issued, or no longer valid; the message says why."""


class AccessClaims(msgspec.Struct, kw_only=True, frozen=True):
    """What Accounts reads of its own access tokens (RFC 9068 JWTs)."""

    sub: uuid.UUID
    """The user, or for a client-credentials token the service client (then `client_id` is the same id)."""
    exp: int
    iat: int
    jti: str
    scope: str = ""
    client_id: uuid.UUID | None = None
    ver: int | None = None
    """The user's token version when the token was issued; a newer version revokes the token."""
    sid: uuid.UUID | None = None
    """The session (login) the token was issued in; ending the session revokes the token."""
    amr: list[str] = []
    """How the user authenticated (RFC 8176)."""
    acr: str | None = None
    roles: list[str] = []


class AccessTokens:
    """Issues and verifies access tokens; verification needs no database."""

    def __init__(self, keys: SigningKeys, settings: Settings) -> None:
        self.keys = keys
        self.issuer = settings.issuer
        self._accepted_issuers = [settings.issuer, *settings.accepted_issuers]
        self.audience = settings.jwt_audience
        self.ttl = settings.access_token_ttl
        self._header = b64url(msgspec.json.encode({"alg": ALGORITHM, "kid": keys.signing_kid, "typ": "at+jwt"}))
        # A client sends the same token for its whole life: its signature needs checking only once.
        self._verified: dict[str, AccessClaims] = {}

    def issue(
        self, user_id: uuid.UUID, *, token_version: int, is_admin: bool, session_id: uuid.UUID, amr: list[str]
    ) -> str:
        """A user's token, naming the session it belongs to and how the user authenticated (`amr`, and `acr`: two
        factors or one)."""
        return self._sign(
            {
                "sub": str(user_id),
                "ver": token_version,
                "sid": str(session_id),
                "amr": amr,
                "acr": assurance(amr),
                "roles": ["admin"] if is_admin else ["user"],
                "scope": " ".join(sorted(ADMIN_SCOPES)) if is_admin else "",
            }
        )

    def issue_for_client(self, client_id: uuid.UUID, scopes: Iterable[str]) -> str:
        """A service client's token (client-credentials grant): RFC 9068, its subject the client itself."""
        return self._sign({"sub": str(client_id), "client_id": str(client_id), "scope": " ".join(scopes)})

    def _sign(self, claims: dict[str, Any]) -> str:
        """The token as a compact JWS (RFC 7515 section 7.1) built here, not by PyJWT's `encode`, which serialised the
        same header again and copied the claims for every token (verifying stays PyJWT's)."""
        now = int(time.time())
        registered = {"iss": self.issuer, "aud": self.audience, "iat": now, "nbf": now, "exp": now + self.ttl}
        signed = self._header + b"." + b64url(_CLAIMS.encode(registered | claims | {"jti": secrets.token_hex(16)}))
        return (signed + b"." + b64url(self.keys.signer.sign(signed).signature)).decode()

    def verify(self, token: str) -> AccessClaims:
        claims = self._verified.get(token)
        if claims is not None and claims.exp + LEEWAY_SECONDS > time.time():
            return claims
        claims = self._verify_signed(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _verify_signed(self, token: str) -> AccessClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.keys.verify_keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise InvalidTokenError("The access token was not signed by a key this service publishes.")
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self._accepted_issuers,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
            )
            return msgspec.convert(payload, AccessClaims, strict=False)
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("The access token has expired.") from None
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise InvalidTokenError(f"The access token is invalid: {exc}.") from None
