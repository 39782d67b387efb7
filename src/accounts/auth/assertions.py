"""Client authentication with a signed JWT: `private_key_jwt` (RFC 7523 sections 2.2 and 3, OpenID Connect Core
section 9). The client signs a short-lived JWT about itself with a private key whose public half it registered
(accounts.clients.keys); PyJWT checks the signature and the claims. The jti's single use is the credential cache's
(CredentialCache.spend_assertion)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jwt

from accounts.auth.cache import ClientState
from accounts.auth.tokens import LEEWAY_SECONDS
from accounts.clients.keys import ASSERTION_ALGORITHMS

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 3600
"""How far ahead an assertion's `exp` may be: an hour, the lifetime authlib and most libraries give by default (and
the most Okta and Google accept), since each jti is kept until its assertion expires."""
MAX_JTI_LENGTH = 256


class AssertionRefused(Exception):
    """The assertion does not authenticate its client; the message says why."""


class VerifiedAssertion(NamedTuple):
    jti: str
    exp: int


def claimed_client(assertion: str) -> str:
    """The client an assertion speaks for (its `sub`), read before anything is checked: it names the keys to check
    it with."""
    try:
        claims: dict[str, Any] = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise AssertionRefused("client_assertion: not a JWT") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AssertionRefused("client_assertion: no sub (the client_id)")
    return subject


def verify_assertion(assertion: str, client: ClientState, audiences: Sequence[str]) -> VerifiedAssertion:
    """The assertion's jti and expiry, if it is signed by one of the client's keys with an allowed algorithm and
    says what RFC 7523 section 3 requires: `iss` and `sub` the client, `aud` one of `audiences`, `exp` in the next
    hour, `nbf` and `iat` not ahead (all with LEEWAY_SECONDS), and a `jti`."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        raise AssertionRefused("client_assertion: not a JWT") from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if not isinstance(algorithm, str) or algorithm not in ASSERTION_ALGORITHMS:
        raise AssertionRefused(f"client_assertion: alg must be one of {', '.join(ASSERTION_ALGORITHMS)}")
    keys = [key for key in client.keys if algorithm in key.algorithms and (kid is None or key.kid == kid)]
    if not keys:
        which = "no keys" if not client.keys else f"no {algorithm} key" + (f" with kid {kid!r}" if kid else "")
        raise AssertionRefused(f"client_assertion: the client has {which} registered")
    for key in keys:  # several only without a kid
        try:
            claims = jwt.decode(
                assertion,
                key.key,
                algorithms=[algorithm],
                audience=list(audiences),
                issuer=str(client.id),
                subject=str(client.id),
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError as exc:
            raise AssertionRefused(f"client_assertion: {exc}") from None
        return _checked(claims)
    raise AssertionRefused("client_assertion: the signature does not verify with the client's registered keys")


def _checked(claims: dict[str, Any]) -> VerifiedAssertion:
    jti, exp = claims["jti"], int(claims["exp"])
    if not 1 <= len(jti) <= MAX_JTI_LENGTH:
        raise AssertionRefused(f"client_assertion: the jti must be 1 to {MAX_JTI_LENGTH} characters")
    if exp > time.time() + MAX_ASSERTION_LIFETIME + LEEWAY_SECONDS:
        raise AssertionRefused(f"client_assertion: exp is more than {MAX_ASSERTION_LIFETIME} seconds ahead")
    return VerifiedAssertion(jti=jti, exp=exp)
