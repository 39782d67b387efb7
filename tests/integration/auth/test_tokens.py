"""Access tokens: their header and claims, verification by another library with only the published keys,
every kind of bad token, and signing-key rotation."""

from __future__ import annotations

import hashlib
import hmac
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.errors import BadSignatureError
from joserfc.jwk import OKPKey
from joserfc.jwt import JWTClaimsRegistry
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.auth.keys import GENERATED_KEY_FILE
from accounts.config import ConfigError, Settings
from accounts.core.security import ADMIN_SCOPES
from tests.database import insert_api_key
from tests.integration.auth.support import (
    CHALLENGE,
    JWKS,
    LOGOUT_ALL,
    ME,
    USERS,
    Account,
    Client,
    LoggedIn,
    assert_unauthenticated,
    b64url,
    b64url_json,
    bearer,
    claims_for,
    log_in,
    new_ed25519_pem,
    request_token,
    sign,
    sign_raw,
    unverified_parts,
    verify_with_jwks,
)


async def fetch_jwks(client: Client) -> dict[str, Any]:
    response = await client.get(JWKS)
    assert response.status_code == 200, response.text
    jwks: dict[str, Any] = response.json()
    return jwks


# --- what a token says --------------------------------------------------------------------------


async def test_token_response_is_a_bearer_pair_that_is_not_cached(
    client: Client, settings: Settings, account_a: Account
) -> None:
    response = await request_token(client, account_a.username, account_a.password)

    assert response.status_code == 200, response.text
    assert (response.headers["cache-control"], response.headers["pragma"]) == ("no-store", "no-cache")
    pair = response.json()
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == settings.access_token_ttl
    assert len(pair["refresh_token"]) >= 43
    assert pair["refresh_token"] not in pair["access_token"]


async def test_access_token_header_and_claims(client: Client, settings: Settings, user_a: LoggedIn) -> None:
    header, claims = unverified_parts(user_a.access_token)
    jwks = await fetch_jwks(client)

    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    assert set(claims) == {
        "iss",
        "aud",
        "sub",
        "exp",
        "iat",
        "nbf",
        "jti",
        "ver",
        "roles",
        "scope",
        "sid",
        "amr",
        "acr",
    }
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.jwt_audience
    assert claims["sub"] == user_a.id
    assert abs(claims["iat"] - time.time()) < 60
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl
    assert claims["ver"] == 0
    assert claims["roles"] == ["user"]
    assert claims["scope"] == ""
    assert len(claims["jti"]) >= 16
    assert claims["amr"] == ["pwd"]  # RFC 8176: a password, and nothing else
    assert claims["acr"] == "urn:accounts:acr:1fa"
    assert uuid.UUID(claims["sid"])


async def test_an_admins_token_carries_the_admin_role_and_scopes(admin: LoggedIn) -> None:
    _, claims = unverified_parts(admin.access_token)
    assert claims["roles"] == ["admin"]
    assert claims["scope"].split() == sorted(ADMIN_SCOPES)


async def test_every_token_has_its_own_id(client: Client, account_a: Account) -> None:
    first, second = await log_in(client, account_a), await log_in(client, account_a)
    assert unverified_parts(first.access_token)[1]["jti"] != unverified_parts(second.access_token)[1]["jti"]
    assert first.refresh_token != second.refresh_token


async def test_jwks_publishes_the_public_signing_key_only(client: Client, signing_key: OKPKey) -> None:
    response = await client.get(JWKS)
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    jwks = response.json()

    assert len(jwks["keys"]) == 1
    (jwk,) = jwks["keys"]
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": signing_key.as_dict(private=False)["x"],
        "kid": signing_key.thumbprint(),  # the RFC 7638 thumbprint, computed by joserfc
        "use": "sig",
        "alg": "EdDSA",
    }
    assert "d" not in jwk


async def test_jwks_needs_no_credentials_and_ignores_bad_ones(client: Client) -> None:
    response = await client.get(JWKS, headers=bearer("not-a-token"))
    assert response.status_code == 200
    assert response.json()["keys"]


async def test_an_issued_token_verifies_with_an_independent_library_and_the_jwks_alone(
    client: Client, settings: Settings, user_a: LoggedIn
) -> None:
    jwks = await fetch_jwks(client)

    token = verify_with_jwks(user_a.access_token, jwks)

    assert token.header["alg"] == "EdDSA"
    JWTClaimsRegistry(
        iss={"essential": True, "value": settings.issuer},
        aud={"essential": True, "value": settings.jwt_audience},
        sub={"essential": True, "value": user_a.id},
        exp={"essential": True},
        nbf={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(token.claims)


async def test_the_signature_is_the_one_openssl_makes_of_the_same_token(signing_key: OKPKey, user_a: LoggedIn) -> None:
    """Accounts signs with libsodium; Ed25519 is deterministic (RFC 8032), so OpenSSL (through cryptography) signing
    the same header and claims with the same key must give the same bytes."""
    signing_input, _, signature = user_a.access_token.rpartition(".")

    assert b64url(signing_key.private_key.sign(signing_input.encode())) == signature


async def test_the_independent_verifier_rejects_a_changed_token(client: Client, user_a: LoggedIn) -> None:
    """The check above can fail: one changed claim breaks the signature for joserfc too."""
    jwks = await fetch_jwks(client)
    header, _, signature = user_a.access_token.split(".")
    _, claims = unverified_parts(user_a.access_token)
    tampered = f"{header}.{b64url_json(claims | {'roles': ['admin']})}.{signature}"
    with pytest.raises(BadSignatureError):
        verify_with_jwks(tampered, jwks)


async def test_a_token_made_with_the_signing_key_and_these_claims_is_accepted(
    client: Client, settings: Settings, signing_key: OKPKey, account_a: Account
) -> None:
    """The control for the bad tokens below: each differs from this one in one way only."""
    token = sign(claims_for(settings, account_a.id), signing_key, kid=signing_key.thumbprint())
    response = await client.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == account_a.id


# --- bad tokens ---------------------------------------------------------------------------------


class Kit(msgspec.Struct, kw_only=True):
    """What the bad-token makers need: the real key, the target user, and a real token of that user."""

    settings: Settings
    key: OKPKey
    user: LoggedIn
    admin_id: str

    @property
    def kid(self) -> str:
        return self.key.thumbprint()

    def claims(self, **overrides: Any) -> dict[str, Any]:
        return claims_for(self.settings, self.user.id, **overrides)

    def signed(self, **overrides: Any) -> str:
        return sign(self.claims(**overrides), self.key, kid=self.kid)


def _now() -> int:
    return int(time.time())


def _unsigned(kit: Kit) -> str:
    return f"{b64url_json({'alg': 'none', 'typ': 'at+jwt', 'kid': kit.kid})}.{b64url_json(kit.claims())}."


def _hs256_with_public_key(kit: Kit) -> str:
    """The algorithm-confusion attack: HMAC with the published public key as the secret."""
    header = b64url_json({"alg": "HS256", "typ": "at+jwt", "kid": kit.kid})
    payload = b64url_json(kit.claims())
    secret = kit.key.as_pem(private=False)
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def _payload_swapped(kit: Kit) -> str:
    """A real token whose claims were changed to another user's afterwards."""
    header, _, signature = kit.user.access_token.split(".")
    return f"{header}.{b64url_json(kit.claims(sub=kit.admin_id, roles=['admin']))}.{signature}"


def _signature_cut(kit: Kit) -> str:
    return kit.user.access_token[:-4]


BAD_TOKENS: dict[str, Callable[[Kit], str]] = {
    "expired": lambda k: k.signed(iat=_now() - 1000, nbf=_now() - 1000, exp=_now() - 120),
    "not_yet_valid": lambda k: k.signed(iat=_now(), nbf=_now() + 600, exp=_now() + 1200),
    "malformed_word": lambda _: "garbage",
    "malformed_three_parts": lambda _: "a.b.c",
    "malformed_two_parts": lambda k: ".".join(k.user.access_token.split(".")[:2]),
    "malformed_json_header": lambda k: f"{b64url(b'{not json')}.{b64url_json(k.claims())}.{b64url(b'x' * 64)}",
    "malformed_header_not_an_object": lambda k: f"{b64url_json([1])}.{b64url_json(k.claims())}.{b64url(b'x' * 64)}",
    "wrongly_signed": lambda k: sign(k.claims(), OKPKey.generate_key("Ed25519"), kid=k.kid),
    "signature_cut": _signature_cut,
    "payload_swapped": _payload_swapped,
    "alg_none": _unsigned,
    "alg_hs256_with_public_key": _hs256_with_public_key,
    "unknown_kid": lambda k: sign(k.claims(), (other := OKPKey.generate_key("Ed25519")), kid=other.thumbprint()),
    "kid_not_a_string": lambda k: sign_raw({"alg": "EdDSA", "typ": "at+jwt", "kid": 7}, k.claims(), k.key),
    "kid_of_the_key_but_alg_es256": lambda k: sign_raw(
        {"alg": "ES256", "typ": "at+jwt", "kid": k.kid}, k.claims(), k.key
    ),
    "no_kid": lambda k: sign(k.claims(), k.key, kid=None),
    "wrong_audience": lambda k: k.signed(aud="another-service"),
    "wrong_issuer": lambda k: k.signed(iss="https://evil.example.com"),
    "no_exp": lambda k: k.signed(exp=None),
    "exp_not_a_number": lambda k: k.signed(exp="tomorrow"),
    "no_sub": lambda k: k.signed(sub=None),
    "sub_not_a_uuid": lambda k: k.signed(sub="root"),
    "sub_unknown_user": lambda k: k.signed(sub=str(uuid.uuid4())),
    "ver_not_current": lambda k: k.signed(ver=1),
    "ver_not_a_number": lambda k: k.signed(ver="zero"),
    "roles_not_a_list": lambda k: k.signed(roles="admin"),
}


@pytest.fixture
def kit(settings: Settings, signing_key: OKPKey, user_a: LoggedIn, admin_account: Account) -> Kit:
    return Kit(settings=settings, key=signing_key, user=user_a, admin_id=admin_account.id)


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_a_bad_token_is_401_with_a_challenge(client: Client, kit: Kit, kind: str) -> None:
    token = BAD_TOKENS[kind](kit)
    assert (await client.get(ME, headers=kit.user.headers)).status_code == 200

    for path in (ME, f"{USERS}/{kit.user.id}", USERS):
        response = await client.get(path, headers=bearer(token))
        assert_unauthenticated(response)


async def test_a_revoked_token_is_401_with_a_challenge(client: Client, user_a: LoggedIn) -> None:
    assert (await client.get(ME, headers=user_a.headers)).status_code == 200
    assert (await client.post(LOGOUT_ALL, headers=user_a.headers)).status_code == 204

    problem = assert_unauthenticated(await client.get(ME, headers=user_a.headers))
    assert "revoked" in problem["detail"]


async def test_a_deleted_users_token_is_401(client: Client, user_a: LoggedIn, admin: LoggedIn) -> None:
    assert (await client.delete(f"{USERS}/{user_a.id}", headers=admin.headers)).status_code == 204
    assert_unauthenticated(await client.get(ME, headers=user_a.headers))


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        ("Basic dXNlcjpwYXNz", "invalid_request"),
        ("Bearer", "invalid_request"),
        ("Bearer    ", "invalid_request"),
        ("Token abc", "invalid_request"),
        ("Bearer acck_000000000000_" + "A" * 43, "invalid_token"),
        ("Bearer acck_short", "invalid_token"),
    ],
)
async def test_a_malformed_authorization_header_is_401(client: Client, authorization: str, error: str) -> None:
    assert_unauthenticated(await client.get(ME, headers={"Authorization": authorization}), error=error)


async def test_no_credentials_is_401_with_a_bare_challenge(client: Client) -> None:
    response = await client.get(ME)
    assert_unauthenticated(response, error=None)
    assert response.headers["www-authenticate"] == CHALLENGE


async def test_the_bearer_scheme_is_case_insensitive(client: Client, user_a: LoggedIn) -> None:
    response = await client.get(ME, headers={"Authorization": f"bearer {user_a.access_token}"})
    assert response.status_code == 200, response.text


async def test_an_access_token_in_the_api_key_header_is_401(client: Client, user_a: LoggedIn) -> None:
    assert_unauthenticated(await client.get(ME, headers={"X-API-Key": user_a.access_token}))


async def test_an_api_key_header_wins_over_a_bearer_token(client: Client, user_a: LoggedIn, database_url: str) -> None:
    """With both headers the key decides, so a token cannot lend a weak key its rights, nor the reverse."""
    key = await insert_api_key(database_url, ["users:read"])
    response = await client.get(ME, headers={**user_a.headers, "X-API-Key": key})
    assert response.status_code == 403
    response = await client.get(ME, headers={**user_a.headers, "X-API-Key": "acck_nope"})
    assert_unauthenticated(response)


# --- signing keys and rotation ------------------------------------------------------------------


async def test_the_generated_signing_key_is_private_to_its_owner(signing_key_file: Path) -> None:
    assert stat.S_IMODE(signing_key_file.stat().st_mode) == 0o600


async def test_a_restarted_app_keeps_the_generated_key(
    client: Client, settings: Settings, user_a: LoggedIn, tmp_path: Path
) -> None:
    fresh = msgspec.structs.replace(settings, data_dir=str(tmp_path / "data"))
    async with AsyncTestClient(create_app(fresh)) as first:
        jwks = await fetch_jwks(first)
        token = (await log_in(first, user_a.account)).access_token
    key_file = tmp_path / "data" / GENERATED_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert jwks != await fetch_jwks(client)

    async with AsyncTestClient(create_app(fresh)) as restarted:
        assert await fetch_jwks(restarted) == jwks
        assert (await restarted.get(ME, headers=bearer(token))).status_code == 200


@pytest.mark.parametrize("source", ["text", "file"])
async def test_the_signing_key_can_be_configured(
    settings: Settings, account_a: Account, tmp_path: Path, source: str
) -> None:
    pem = new_ed25519_pem()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(pem)
    data_dir = tmp_path / "data"
    given = {"jwt_signing_key": pem.decode()} if source == "text" else {"jwt_signing_key_file": str(key_file)}
    configured = msgspec.structs.replace(settings, data_dir=str(data_dir), **given)
    expected_kid = OKPKey.import_key(pem).thumbprint()

    async with AsyncTestClient(create_app(configured)) as app:
        jwks = await fetch_jwks(app)
        token = (await log_in(app, account_a)).access_token

    assert [key["kid"] for key in jwks["keys"]] == [expected_kid]
    assert unverified_parts(token)[0]["kid"] == expected_kid
    verify_with_jwks(token, jwks)
    assert not (data_dir / GENERATED_KEY_FILE).exists()


@pytest.mark.parametrize("retired_as", ["private", "public"])
async def test_after_a_rotation_tokens_of_the_retired_key_still_work(
    *,
    client: Client,
    settings: Settings,
    signing_key: OKPKey,
    signing_key_file: Path,
    user_a: LoggedIn,
    tmp_path: Path,
    retired_as: str,
) -> None:
    old_token = user_a.access_token
    old_kid = signing_key.thumbprint()
    retired = signing_key_file
    if retired_as == "public":
        retired = tmp_path / "retired-public.pem"
        retired.write_bytes(signing_key.as_pem(private=False))
    new_pem = new_ed25519_pem()
    new_kid = OKPKey.import_key(new_pem).thumbprint()
    rotated = msgspec.structs.replace(settings, jwt_signing_key=new_pem.decode(), jwt_verify_key_files=f" {retired} ,")

    async with AsyncTestClient(create_app(rotated), raise_server_exceptions=False) as app:
        jwks = await fetch_jwks(app)
        assert [key["kid"] for key in jwks["keys"]] == [new_kid, old_kid]
        response = await app.get(ME, headers=bearer(old_token))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == user_a.id
        new_token = (await log_in(app, user_a.account)).access_token
        assert unverified_parts(new_token)[0]["kid"] == new_kid
        assert (await app.get(ME, headers=bearer(new_token))).status_code == 200

    verify_with_jwks(old_token, jwks)
    verify_with_jwks(new_token, jwks)
    # The app that has not rotated yet does not know the new key.
    assert_unauthenticated(await client.get(ME, headers=bearer(new_token)))


async def test_without_the_retired_key_its_tokens_stop_working(settings: Settings, user_a: LoggedIn) -> None:
    only_new = msgspec.structs.replace(settings, jwt_signing_key=new_ed25519_pem().decode())
    async with AsyncTestClient(create_app(only_new), raise_server_exceptions=False) as app:
        assert len((await fetch_jwks(app))["keys"]) == 1
        assert_unauthenticated(await app.get(ME, headers=user_a.headers))


@pytest.mark.parametrize(
    "overrides",
    [
        {"jwt_signing_key": "not a pem"},
        {"jwt_signing_key_file": "/no/such/key.pem"},
        {"jwt_verify_key_files": "/no/such/retired.pem"},
    ],
)
def test_a_bad_key_setting_stops_the_app_with_a_config_error(settings: Settings, overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        create_app(msgspec.structs.replace(settings, **overrides))


def test_a_non_ed25519_signing_key_is_refused(settings: Settings) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError, match="Ed25519"):
        create_app(msgspec.structs.replace(settings, jwt_signing_key=pem.decode()))
