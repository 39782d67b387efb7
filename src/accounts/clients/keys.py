"""The public keys of service clients (RFC 7517 JWK Sets), checked when registered and turned into the keys that
verify their `private_key_jwt` assertions (accounts.auth.assertions). Keys are parsed by PyJWT and cryptography."""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from accounts.clients.schemas import AssertionAlgorithm, ClientJwk, ClientJwkSet
from accounts.core.errors import FieldError, InvalidInput

PublicKey = Ed25519PublicKey | EllipticCurvePublicKey | RSAPublicKey
ASSERTION_ALGORITHMS: tuple[str, ...] = get_args(AssertionAlgorithm)
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192


class _Shape(NamedTuple):
    """What a key of one type is: its curve, the members it must have and may not have, what it verifies."""

    curve: str | None
    required: tuple[str, ...]
    foreign: tuple[str, ...]
    algorithms: frozenset[str]


_SHAPES = {
    "OKP": _Shape("Ed25519", ("crv", "x"), ("y", "n", "e"), frozenset({"EdDSA"})),
    "EC": _Shape("P-256", ("crv", "x", "y"), ("n", "e"), frozenset({"ES256"})),
    "RSA": _Shape(None, ("n", "e"), ("crv", "x", "y"), frozenset({"RS256", "PS256"})),
}


class ClientKey(NamedTuple):
    """One registered public key, ready to verify: its `kid` (if any) and the algorithms it may verify."""

    kid: str | None
    algorithms: frozenset[str]
    key: PublicKey


def verification_keys(jwks: ClientJwkSet, prefix: str = "jwks.") -> tuple[ClientKey, ...]:
    """The keys of `jwks`, each checked (its members fit its type, it parses, RSA of 2048 to 8192 bits, no kid or
    key given twice); InvalidInput naming the member (`jwks.keys[1].y`, the set sent under `prefix`) otherwise."""
    keys: list[ClientKey] = []
    errors: list[FieldError] = []
    seen: dict[bytes, int] = {}
    kids: dict[str, int] = {}
    for index, jwk in enumerate(jwks.keys):
        where = f"{prefix}keys[{index}]"
        problems = _shape_errors(jwk, where)
        key = None if problems else _parsed(jwk, where, problems)
        if isinstance(jwk.kid, str):
            if jwk.kid in kids:
                problems.append(FieldError(field=f"{where}.kid", message=f"the kid of keys[{kids[jwk.kid]}] too"))
            kids.setdefault(jwk.kid, index)
        if key is not None:
            spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            if spki in seen:
                problems.append(FieldError(field=where, message=f"the same key as keys[{seen[spki]}]"))
            seen.setdefault(spki, index)
            algorithms = frozenset({jwk.alg}) if isinstance(jwk.alg, str) else _SHAPES[jwk.kty].algorithms
            keys.append(ClientKey(jwk.kid if isinstance(jwk.kid, str) else None, algorithms, key))
        errors += problems
    if errors:
        raise InvalidInput("; ".join(f"{error.field}: {error.message}" for error in errors), errors=errors)
    return tuple(keys)


def stored_keys(jwks: dict[str, Any] | None) -> tuple[ClientKey, ...]:
    """The verification keys of a JWK Set as stored (checked when it was registered)."""
    return verification_keys(msgspec.convert(jwks, ClientJwkSet)) if jwks else ()


def to_stored(jwks: ClientJwkSet | None) -> dict[str, Any] | None:
    """The JWK Set as the `jwks` column keeps it: None for no keys."""
    return msgspec.to_builtins(jwks) if jwks is not None and jwks.keys else None


def _shape_errors(jwk: ClientJwk, where: str) -> list[FieldError]:
    shape = _SHAPES[jwk.kty]
    members = msgspec.structs.asdict(jwk)
    errors = [
        FieldError(field=f"{where}.{name}", message=f"required for an {jwk.kty} key")
        for name in shape.required
        if members[name] is msgspec.UNSET
    ]
    errors += [
        FieldError(field=f"{where}.{name}", message=f"not a member of an {jwk.kty} key")
        for name in shape.foreign
        if members[name] is not msgspec.UNSET
    ]
    if shape.curve is not None and isinstance(jwk.crv, str) and jwk.crv != shape.curve:
        errors.append(FieldError(field=f"{where}.crv", message=f"an {jwk.kty} key must be on {shape.curve}"))
    if isinstance(jwk.alg, str) and jwk.alg not in shape.algorithms:
        verifies = " or ".join(sorted(shape.algorithms))
        errors.append(FieldError(field=f"{where}.alg", message=f"an {jwk.kty} key verifies {verifies}"))
    return errors


def _parsed(jwk: ClientJwk, where: str, errors: list[FieldError]) -> PublicKey | None:
    """The key as cryptography's public key, or None with the reason added to `errors`."""
    members = {name: value for name, value in msgspec.structs.asdict(jwk).items() if value is not msgspec.UNSET}
    algorithm = jwk.alg if isinstance(jwk.alg, str) else sorted(_SHAPES[jwk.kty].algorithms)[0]
    try:
        key: PublicKey = jwt.PyJWK(members, algorithm).key  # public members make a public key
    except (jwt.PyJWTError, ValueError, TypeError):
        errors.append(FieldError(field=where, message=f"not a valid {jwk.kty} public key"))
        return None
    if isinstance(key, RSAPublicKey) and not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        message = f"an RSA key of {key.key_size} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
        errors.append(FieldError(field=f"{where}.n", message=message))
        return None
    return key
