"""`private_key_jwt` (RFC 7523 sections 2.2 and 3, OpenID Connect Core section 9): a service client registers public
keys and authenticates at the token, introspection and revocation endpoints with JWTs it signs.

The flow is driven by authlib's OAuth 2 client (`PrivateKeyJWT`) against a real `accounts serve` with two workers,
for each kind of key; the refusals are assertions made by hand with PyJWT, each checked to be `invalid_client` and
to leave no spent jti behind. Keys are made by joserfc."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

from accounts.auth.jobs import purge_expired_credentials
from accounts.config import Settings
from tests.integration.auth.oauth import (
    AUTHORIZATION_SERVER,
    CLIENTS,
    INTROSPECT,
    OPENID_CONFIGURATION,
    REVOKE,
    ServiceClient,
)
from tests.integration.auth.support import (
    TOKEN,
    USERS,
    Client,
    LoggedIn,
    assert_oauth_error,
    b64url,
    b64url_json,
    bearer,
    sql,
    unverified_parts,
)
from tests.problems import assert_problem

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = {"Ed25519": "EdDSA", "P-256": "ES256", "RSA": "RS256", "RSA-PSS": "PS256"}
"""The kinds of key a test client gets, and the algorithm it signs with."""
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")  # RFC 9864


@dataclass(frozen=True)
class Signer:
    """A private key of a test client, the algorithm it signs with, and the public JWK it registers."""

    key: OKPKey | ECKey | RSAKey
    alg: str

    @property
    def kid(self) -> str:
        kid = self.key.kid
        assert kid is not None
        return kid

    @property
    def jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    def sign(self, claims: dict[str, Any], *, kid: str | None = "own", alg: str | None = None) -> str:
        """A JWT signed by PyJWT with this key (`kid`: "own" names this key, None sends no kid)."""
        headers = {} if kid is None else {"kid": self.kid if kid == "own" else kid}
        return jwt.encode(claims, self.key.private_key, algorithm=alg or self.alg, headers=headers)


def new_signer(kind: str) -> Signer:
    key: OKPKey | ECKey | RSAKey
    if kind == "Ed25519":
        key = OKPKey.generate_key("Ed25519", auto_kid=True)
    elif kind == "P-256":
        key = ECKey.generate_key("P-256", auto_kid=True)
    else:
        key = RSAKey.generate_key(2048, auto_kid=True)
    return Signer(key, ALGORITHMS[kind])


def jwks(*signers: Signer) -> dict[str, Any]:
    return {"keys": [signer.jwk for signer in signers]}


@dataclass(frozen=True)
class KeyedClient:
    """A service client made through the API with public keys, and the private key it signs with."""

    client_id: str
    signer: Signer
    scopes: tuple[str, ...]


async def make_keyed_client(
    client: Client, admin: LoggedIn, signer: Signer, *scopes: str, others: tuple[Signer, ...] = ()
) -> KeyedClient:
    body = {"name": "billing", "scopes": list(scopes or ("users:read",)), "jwks": jwks(*others, signer)}
    created = await client.post(CLIENTS, json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    return KeyedClient(created.json()["client_id"], signer, tuple(sorted(body["scopes"])))


def token_endpoint(settings: Settings) -> str:
    """The token endpoint's URL as the discovery documents name it (under PUBLIC_URL)."""
    return settings.public_url.rstrip("/") + TOKEN


def claims_of(client_id: str, audience: str | list[str], **overrides: Any) -> dict[str, Any]:
    """What RFC 7523 section 3 asks of an assertion, valid for a minute; an override of None leaves a claim out."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def grant(assertion: str, **fields: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **fields,
    }


async def spent_jtis(database_url: str) -> list[str]:
    return [row["jti"] for row in await sql(database_url, "SELECT jti FROM client_assertions")]


@pytest.fixture(autouse=True)
def plain_http_is_fine_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """authlib refuses http:// endpoints unless told that this is a test on loopback."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture
async def keyed(client: Client, admin: LoggedIn) -> KeyedClient:
    """A client with one Ed25519 key, allowed to read users and introspect."""
    return await make_keyed_client(client, admin, new_signer("Ed25519"), "users:read", "tokens:introspect")


@pytest.fixture
async def live_metadata(live_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live_url) as http:
        document: dict[str, Any] = (await http.get(AUTHORIZATION_SERVER)).json()
    return document


# --- discovery ---------------------------------------------------------------------------------


async def test_discovery_names_private_key_jwt_and_its_algorithms(client: Client) -> None:
    for path in (AUTHORIZATION_SERVER, OPENID_CONFIGURATION):
        document = (await client.get(path)).json()
        AuthorizationServerMetadata(document).validate()  # signing algorithms required with private_key_jwt
        for endpoint in ("token", "introspection", "revocation"):
            assert "private_key_jwt" in document[f"{endpoint}_endpoint_auth_methods_supported"], (path, endpoint)
            algorithms = document[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
            assert algorithms == ["EdDSA", "ES256", "RS256", "PS256"], (path, endpoint)


# --- the flow, with authlib ------------------------------------------------------------------------


def oauth_client(keyed: KeyedClient, audience: str, *, kid: bool = True) -> AsyncOAuth2Client:
    """authlib's client authenticating with `private_key_jwt`, each request with a new assertion for `audience`."""
    method = PrivateKeyJWT(audience, alg=keyed.signer.alg, headers={"kid": keyed.signer.kid} if kid else None)
    return AsyncOAuth2Client(
        client_id=keyed.client_id,
        client_secret=keyed.signer.key,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
    )


@pytest.mark.parametrize("kind", list(ALGORITHMS))
@pytest.mark.parametrize("audience", ["token_endpoint", "issuer"])
async def test_authlib_gets_introspects_and_revokes_a_token_with_a_signed_assertion(
    *, client: Client, admin: LoggedIn, live_url: str, live_metadata: dict[str, Any], kind: str, audience: str
) -> None:
    keyed = await make_keyed_client(client, admin, new_signer(kind), "users:read", "tokens:introspect")
    async with oauth_client(keyed, live_metadata[audience], kid=kind != "RSA") as session:
        token = await session.fetch_token(live_url + TOKEN, grant_type="client_credentials", scope="tokens:introspect")
        assert token["scope"] == "tokens:introspect"
        assert "refresh_token" not in token
        claims = unverified_parts(token["access_token"])[1]
        assert claims["sub"] == claims["client_id"] == keyed.client_id

        introspected = await session.introspect_token(live_url + INTROSPECT, token=token["access_token"])
        assert introspected.status_code == 200, introspected.text
        assert (introspected.json()["active"], introspected.json()["client_id"]) == (True, keyed.client_id)

        revoked = await session.revoke_token(live_url + REVOKE, token=token["access_token"])
        assert revoked.status_code == 200, revoked.text
        gone = await session.introspect_token(live_url + INTROSPECT, token=token["access_token"])
        assert gone.json() == {"active": False}
    async with httpx.AsyncClient(base_url=live_url) as http:
        assert (await http.get(USERS, headers=bearer(token["access_token"]))).status_code == 401


async def test_the_secret_of_a_client_with_keys_still_works(client: Client, admin: LoggedIn) -> None:
    body = {"name": "billing", "scopes": ["users:read"], "jwks": jwks(new_signer("P-256"))}
    created = (await client.post(CLIENTS, json=body, headers=admin.headers)).json()
    service = ServiceClient(created["client_id"], created["client_secret"], ("users:read",))
    assert (await client.post(TOKEN, data={"grant_type": "client_credentials"}, auth=service.basic)).status_code == 200


# --- what an assertion may be ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant", ["issuer", "token endpoint", "audience list", "no kid", "nbf and iat", "client_id sent", "no iat"]
)
async def test_assertions_that_authenticate(
    client: Client, admin: LoggedIn, settings: Settings, database_url: str, variant: str
) -> None:
    signer = new_signer("Ed25519")
    keyed = await make_keyed_client(client, admin, signer, others=(new_signer("P-256"), new_signer("Ed25519")))
    audience: str | list[str] = {
        "issuer": settings.issuer,
        "audience list": ["https://elsewhere.example.com", token_endpoint(settings)],
    }.get(variant, token_endpoint(settings))
    now = int(time.time())
    overrides = {"nbf and iat": {"nbf": now - 5, "iat": now - 5}, "no iat": {"iat": None}}.get(variant, {})
    claims = claims_of(keyed.client_id, audience, **overrides)
    assertion = signer.sign(claims, kid=None if variant == "no kid" else "own")
    extra = {"client_id": keyed.client_id} if variant == "client_id sent" else {}
    response = await client.post(TOKEN, data=grant(assertion, **extra))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "users:read"
    assert await spent_jtis(database_url) == [claims["jti"]]


async def test_the_introspection_endpoints_own_url_is_an_audience_there_only(
    client: Client, keyed: KeyedClient, settings: Settings, user_a: LoggedIn
) -> None:
    """authlib's default audience is the URL it posts to; it names this server, so it is accepted there."""
    introspect_url = settings.public_url.rstrip("/") + INTROSPECT
    form = {"token": user_a.access_token, "client_assertion_type": ASSERTION_TYPE}
    own = keyed.signer.sign(claims_of(keyed.client_id, introspect_url))
    answer = await client.post(INTROSPECT, data={**form, "client_assertion": own})
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is True
    elsewhere = keyed.signer.sign(claims_of(keyed.client_id, introspect_url))
    assert_oauth_error(await client.post(TOKEN, data=grant(elsewhere)), 401, "invalid_client")


Assertion = Callable[[KeyedClient, Settings], str]


def _signed(**overrides: Any) -> Assertion:
    """An assertion signed by the client's key, with claims changed (a callable is given the time now)."""

    def make(keyed: KeyedClient, settings: Settings) -> str:
        now = int(time.time())
        values = {name: value(now) if callable(value) else value for name, value in overrides.items()}
        return keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings), **values))

    return make


def _unsigned(keyed: KeyedClient, settings: Settings) -> str:
    claims = claims_of(keyed.client_id, token_endpoint(settings))
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{b64url_json(claims)}."


def _hmac(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An HS256 JWT made by hand: JWT libraries refuse to key an HMAC with a public key, as an attacker would not."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    return f"{signing_input}.{b64url(hmac.digest(secret, signing_input.encode(), 'sha256'))}"


def _hmac_with_the_jwks(keyed: KeyedClient, settings: Settings) -> str:
    """The classic confusion: the public JWK Set, known to anyone, used as an HMAC secret."""
    secret = json.dumps(jwks(keyed.signer)).encode()
    return _hmac(secret, {"alg": "HS256", "typ": "JWT"}, claims_of(keyed.client_id, token_endpoint(settings)))


def _hmac_with_the_public_key(keyed: KeyedClient, settings: Settings) -> str:
    header = {"alg": "HS256", "kid": keyed.signer.kid}
    return _hmac(keyed.signer.jwk["x"].encode(), header, claims_of(keyed.client_id, token_endpoint(settings)))


def _another_key_with_the_kid(keyed: KeyedClient, settings: Settings) -> str:
    return new_signer("Ed25519").sign(claims_of(keyed.client_id, token_endpoint(settings)), kid=keyed.signer.kid)


def _another_key_without_kid(keyed: KeyedClient, settings: Settings) -> str:
    return new_signer("Ed25519").sign(claims_of(keyed.client_id, token_endpoint(settings)), kid=None)


def _another_algorithm(keyed: KeyedClient, settings: Settings) -> str:
    """An RSA signature under the kid of the client's Ed25519 key."""
    return new_signer("RSA").sign(claims_of(keyed.client_id, token_endpoint(settings)), kid=keyed.signer.kid)


def _tampered(keyed: KeyedClient, settings: Settings) -> str:
    header, _, signature = _signed()(keyed, settings).split(".")
    return f"{header}.{b64url_json(claims_of(keyed.client_id, token_endpoint(settings), scope='all'))}.{signature}"


UNKNOWN_CLIENT = "0190f8d6-64c4-7d8f-b2a4-0a7d3b2e9c11"
REFUSED: dict[str, Assertion] = {
    "signed by another key with the registered kid": _another_key_with_the_kid,
    "signed by another key without a kid": _another_key_without_kid,
    "an unregistered kid": lambda keyed, settings: keyed.signer.sign(
        claims_of(keyed.client_id, token_endpoint(settings)), kid="not-registered"
    ),
    "another algorithm than its key's": _another_algorithm,
    "claims changed after signing": _tampered,
    "expired": _signed(iat=lambda now: now - 600, exp=lambda now: now - 120),
    "exp more than an hour ahead": _signed(exp=lambda now: now + 3600 + 300),
    "no exp": _signed(exp=None),
    "exp not a number": _signed(exp="tomorrow"),
    "nbf ahead": _signed(nbf=lambda now: now + 300),
    "iat ahead": _signed(iat=lambda now: now + 300),
    "aud of another server": _signed(aud="https://elsewhere.example.com/token"),
    "aud of another endpoint here": lambda keyed, settings: keyed.signer.sign(
        claims_of(keyed.client_id, settings.public_url.rstrip("/") + USERS)
    ),
    "no aud": _signed(aud=None),
    "iss is not sub": _signed(iss=UNKNOWN_CLIENT),
    "no iss": _signed(iss=None),
    "sub of an unknown client": _signed(sub=UNKNOWN_CLIENT, iss=UNKNOWN_CLIENT),
    "sub not a client id": _signed(sub="billing", iss="billing"),
    "no sub": _signed(sub=None),
    "no jti": _signed(jti=None),
    "jti not a string": _signed(jti=12345),
    "jti too long": _signed(jti="x" * 257),
    "alg none": _unsigned,
    "HS256 keyed with the JWKS": _hmac_with_the_jwks,
    "HS256 keyed with the public key": _hmac_with_the_public_key,
    "not a JWT": lambda _keyed, _settings: "not-a-jwt",
    "three dots of nothing": lambda _keyed, _settings: "a.b.c",
    "a JSON array as claims": lambda keyed, _settings: jwt.api_jws.encode(
        b"[1, 2]", keyed.signer.key.private_key, "EdDSA"
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_bad_assertion_is_invalid_client_at_every_endpoint_and_spends_nothing(
    *, client: Client, keyed: KeyedClient, settings: Settings, database_url: str, user_a: LoggedIn, case: str
) -> None:
    make = REFUSED[case]
    body = assert_oauth_error(await client.post(TOKEN, data=grant(make(keyed, settings))), 401, "invalid_client")
    assert body["error_description"].startswith(("client_assertion", "client_id")), body
    form = {"token": user_a.access_token, "client_assertion_type": ASSERTION_TYPE}
    for endpoint in (INTROSPECT, REVOKE):
        response = await client.post(endpoint, data={**form, "client_assertion": make(keyed, settings)})
        assert_oauth_error(response, 401, "invalid_client")
    assert await spent_jtis(database_url) == []
    assert (await client.get("/api/v1/users/me", headers=user_a.headers)).status_code == 200  # nothing revoked


async def test_an_assertion_works_once(client: Client, keyed: KeyedClient, settings: Settings) -> None:
    assertion = keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings)))
    assert (await client.post(TOKEN, data=grant(assertion))).status_code == 200
    replayed = assert_oauth_error(await client.post(TOKEN, data=grant(assertion)), 401, "invalid_client")
    assert "jti" in replayed["error_description"]
    form = {"token": "x", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    assert_oauth_error(await client.post(INTROSPECT, data=form), 401, "invalid_client")


async def test_an_assertion_whose_request_fails_later_is_spent_too(
    client: Client, keyed: KeyedClient, settings: Settings
) -> None:
    """The jti is spent on its own, whatever becomes of the request: a refused scope does not give it back."""
    assertion = keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings)))
    assert_oauth_error(await client.post(TOKEN, data=grant(assertion, scope="users:write")), 400, "invalid_scope")
    assert_oauth_error(await client.post(TOKEN, data=grant(assertion)), 401, "invalid_client")


async def test_of_concurrent_requests_with_one_assertion_exactly_one_is_served(
    client: Client, keyed: KeyedClient, live_metadata: dict[str, Any], live_url: str
) -> None:
    assertion = keyed.signer.sign(claims_of(keyed.client_id, live_metadata["token_endpoint"]))

    async def send() -> int:
        async with httpx.AsyncClient(base_url=live_url) as http:  # a connection each: both workers take some
            return (await http.post(TOKEN, data=grant(assertion))).status_code

    statuses = await asyncio.gather(*(send() for _ in range(12)))
    assert sorted(statuses) == [200] + [401] * 11


async def test_the_client_id_field_must_name_the_assertions_client(
    client: Client, keyed: KeyedClient, settings: Settings
) -> None:
    assertion = keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings)))
    body = assert_oauth_error(
        await client.post(TOKEN, data=grant(assertion, client_id=UNKNOWN_CLIENT)), 401, "invalid_client"
    )
    assert body["error_description"].startswith("client_id")


async def test_a_client_without_keys_cannot_use_assertions(client: Client, admin: LoggedIn, settings: Settings) -> None:
    created = await client.post(CLIENTS, json={"name": "billing", "scopes": ["users:read"]}, headers=admin.headers)
    client_id = created.json()["client_id"]
    assert created.json()["jwks"] is None
    assertion = new_signer("Ed25519").sign(claims_of(client_id, token_endpoint(settings)))
    body = assert_oauth_error(await client.post(TOKEN, data=grant(assertion)), 401, "invalid_client")
    assert "no keys" in body["error_description"]


async def test_a_deleted_clients_assertions_are_refused(
    client: Client, admin: LoggedIn, keyed: KeyedClient, settings: Settings, database_url: str
) -> None:
    used = keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings)))
    assert (await client.post(TOKEN, data=grant(used))).status_code == 200
    assert (await client.delete(f"{CLIENTS}/{keyed.client_id}", headers=admin.headers)).status_code == 204
    assert await spent_jtis(database_url) == []  # its spent jtis went with it
    fresh = keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings)))
    assert_oauth_error(await client.post(TOKEN, data=grant(fresh)), 401, "invalid_client")


# --- one method per request -----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [TOKEN, INTROSPECT, REVOKE])
@pytest.mark.parametrize("other", ["basic", "client_secret"])
async def test_an_assertion_with_a_secret_is_invalid_request(
    client: Client, admin: LoggedIn, settings: Settings, endpoint: str, other: str
) -> None:
    signer = new_signer("Ed25519")
    body = {"name": "billing", "scopes": ["tokens:introspect"], "jwks": jwks(signer)}
    created = (await client.post(CLIENTS, json=body, headers=admin.headers)).json()
    service = ServiceClient(created["client_id"], created["client_secret"], ("tokens:introspect",))
    assertion = signer.sign(claims_of(service.client_id, token_endpoint(settings)))
    form = {"grant_type": "client_credentials", "token": "x"} if endpoint == TOKEN else {"token": "x"}
    form |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    if other == "basic":
        response = await client.post(endpoint, data=form, auth=service.basic)
    else:
        response = await client.post(endpoint, data={**form, "client_secret": service.client_secret})
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("assertion_type", "with_assertion", "status", "error"),
    [
        (ASSERTION_TYPE, False, 400, "invalid_request"),
        (None, True, 400, "invalid_request"),
        ("urn:ietf:params:oauth:client-assertion-type:saml2-bearer", True, 401, "invalid_client"),
    ],
)
async def test_an_incomplete_or_other_assertion_is_refused(
    *,
    client: Client,
    keyed: KeyedClient,
    settings: Settings,
    assertion_type: str | None,
    with_assertion: bool,
    status: int,
    error: str,
) -> None:
    form = {"grant_type": "client_credentials"}
    if assertion_type is not None:
        form["client_assertion_type"] = assertion_type
    if with_assertion:
        form["client_assertion"] = keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings)))
    assert_oauth_error(await client.post(TOKEN, data=form), status, error)


# --- registering and replacing keys ---------------------------------------------------------------------------


async def test_registered_keys_are_kept_and_shown_as_given(client: Client, admin: LoggedIn, database_url: str) -> None:
    signers = [new_signer(kind) for kind in ("Ed25519", "P-256", "RSA")]
    registered = jwks(*signers)
    registered["keys"][2] |= {"alg": "PS256", "use": "sig", "key_ops": ["verify"]}
    body = {"name": "billing", "scopes": ["users:read"], "jwks": registered}
    created = await client.post(CLIENTS, json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    assert created.json()["jwks"] == registered
    assert (await client.get(created.headers["location"], headers=admin.headers)).json()["jwks"] == registered
    listed = (await client.get(CLIENTS, headers=admin.headers)).json()["items"]
    assert [item["jwks"] for item in listed] == [registered]
    (row,) = await sql(database_url, "SELECT jwks FROM oauth_clients")
    assert json.loads(row["jwks"]) == registered


async def test_an_empty_key_set_is_no_keys(client: Client, admin: LoggedIn, database_url: str) -> None:
    body = {"name": "billing", "scopes": ["users:read"], "jwks": {"keys": []}}
    created = await client.post(CLIENTS, json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    assert created.json()["jwks"] is None
    assert [row["jwks"] for row in await sql(database_url, "SELECT jwks FROM oauth_clients")] == [None]


def _rsa_of(bits: int) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # a key too short, on purpose
        return dict(RSAKey.generate_key(bits).as_dict(private=False))


_ED = dict(OKPKey.generate_key("Ed25519").as_dict(private=False))
_EC = dict(ECKey.generate_key("P-256").as_dict(private=False))
BAD_KEYS: dict[str, tuple[list[dict[str, Any]], str, str]] = {
    "an Ed25519 private key": (
        [dict(OKPKey.generate_key("Ed25519").as_dict(private=True))],
        "jwks.keys[0]",
        "unknown field `d`",
    ),
    "an EC private key": ([dict(ECKey.generate_key("P-256").as_dict(private=True))], "jwks.keys[0]", "field `d`"),
    "an RSA private key": ([dict(RSAKey.generate_key(2048).as_dict(private=True))], "jwks.keys[0]", "field `d`"),
    "a symmetric key": ([{"kty": "oct", "k": "c2VjcmV0"}], "jwks.keys[0].kty", "oct"),
    "an X25519 key": ([_ED | {"crv": "X25519"}], "jwks.keys[0].crv", "X25519"),
    "a P-384 key": ([dict(ECKey.generate_key("P-384").as_dict(private=False))], "jwks.keys[0].crv", "P-384"),
    "RSA of 1024 bits": ([_rsa_of(1024)], "jwks.keys[0].n", "1024 bits"),
    "an EC key without y": ([{k: v for k, v in _EC.items() if k != "y"}], "jwks.keys[0].y", "required"),
    "an EC point off the curve": ([_EC | {"y": _EC["x"]}], "jwks.keys[0]", "not a valid EC public key"),
    "an Ed25519 key of 31 bytes": ([_ED | {"x": "A" * 42}], "jwks.keys[0]", "not a valid OKP public key"),
    "an OKP key with n": ([_ED | {"n": "AQAB"}], "jwks.keys[0].n", "not a member"),
    "HS256 as its alg": ([_ED | {"alg": "HS256"}], "jwks.keys[0].alg", "HS256"),
    "ES256 on an Ed25519 key": ([_ED | {"alg": "ES256"}], "jwks.keys[0].alg", "verifies EdDSA"),
    "alg none": ([_ED | {"alg": "none"}], "jwks.keys[0].alg", "none"),
    "an encryption key": ([_ED | {"use": "enc"}], "jwks.keys[0].use", "enc"),
    "a certificate chain": ([_ED | {"x5c": ["MIIB"]}], "jwks.keys[0]", "field `x5c`"),
    "x not base64url": ([_ED | {"x": "not base64!"}], "jwks.keys[0].x", "matching regex"),
    "the same key twice": ([_ED, _ED | {"kid": "again"}], "jwks.keys[1]", "the same key as keys[0]"),
    "the same kid twice": ([_ED | {"kid": "k"}, _EC | {"kid": "k"}], "jwks.keys[1].kid", "keys[0]"),
    "eleven keys": (
        [dict(OKPKey.generate_key("Ed25519").as_dict(private=False)) for _ in range(11)],
        "jwks.keys",
        "length <= 10",
    ),
}


@pytest.mark.parametrize("case", list(BAD_KEYS))
async def test_a_bad_key_set_is_refused_naming_the_member_and_nothing_is_kept(
    client: Client, admin: LoggedIn, keyed: KeyedClient, database_url: str, case: str
) -> None:
    keys, field, says = BAD_KEYS[case]
    body = {"name": "x", "scopes": ["users:read"], "jwks": {"keys": keys}}
    problem = assert_problem(await client.post(CLIENTS, json=body, headers=admin.headers), 400, field=field)
    assert says in problem["detail"], problem
    assert [row["id"] for row in await sql(database_url, "SELECT id FROM oauth_clients")] == [
        uuid.UUID(keyed.client_id)
    ]
    replaced = await client.put(f"{CLIENTS}/{keyed.client_id}/jwks", json={"keys": keys}, headers=admin.headers)
    assert says in assert_problem(replaced, 400, field=field.removeprefix("jwks."))["detail"]
    read = (await client.get(f"{CLIENTS}/{keyed.client_id}", headers=admin.headers)).json()
    assert read["jwks"] == jwks(keyed.signer)


async def test_replacing_the_keys_refuses_the_old_one_at_once_and_records_an_event(
    client: Client, admin: LoggedIn, keyed: KeyedClient, settings: Settings, database_url: str
) -> None:
    def assertion(signer: Signer) -> dict[str, str]:
        return grant(signer.sign(claims_of(keyed.client_id, token_endpoint(settings))))

    assert (await client.post(TOKEN, data=assertion(keyed.signer))).status_code == 200  # cached by this worker
    new = new_signer("RSA")
    replaced = await client.put(f"{CLIENTS}/{keyed.client_id}/jwks", json=jwks(new), headers=admin.headers)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["jwks"] == jwks(new)
    assert replaced.json()["client_id"] == keyed.client_id
    assert_oauth_error(await client.post(TOKEN, data=assertion(keyed.signer)), 401, "invalid_client")
    assert (await client.post(TOKEN, data=assertion(new))).status_code == 200

    emptied = await client.put(f"{CLIENTS}/{keyed.client_id}/jwks", json={"keys": []}, headers=admin.headers)
    assert emptied.json()["jwks"] is None
    assert_oauth_error(await client.post(TOKEN, data=assertion(new)), 401, "invalid_client")

    rows = await sql(
        database_url,
        "SELECT type, actor_type, actor_id, data FROM events WHERE subject_id = $1 ORDER BY seq",
        keyed.client_id,
    )
    changes = [(row["actor_type"], row["actor_id"], json.loads(row["data"])) for row in rows[1:]]
    assert [row["type"] for row in rows] == ["client.created", "client.keys_changed", "client.keys_changed"]
    assert changes == [
        ("user", admin.id, {"keys": [{"kty": "RSA", "kid": new.kid}]}),
        ("user", admin.id, {"keys": []}),
    ]


async def test_replacing_keys_is_for_admins_and_known_clients(
    client: Client, keyed: KeyedClient, admin: LoggedIn, user_a: LoggedIn
) -> None:
    body = jwks(new_signer("Ed25519"))
    assert_problem(await client.put(f"{CLIENTS}/{keyed.client_id}/jwks", json=body, headers=user_a.headers), 403)
    assert_problem(await client.put(f"{CLIENTS}/{UNKNOWN_CLIENT}/jwks", json=body, headers=admin.headers), 404)
    assert_problem(await client.put(f"{CLIENTS}/not-a-uuid/jwks", json=body, headers=admin.headers), 400)


async def test_replaced_keys_are_refused_at_once_by_every_worker(
    client: Client, admin: LoggedIn, keyed: KeyedClient, live_metadata: dict[str, Any], live_url: str
) -> None:
    async def statuses(signer: Signer, times: int = 8) -> set[int]:
        """The statuses of `times` grants, each on a new connection (so both workers answer some)."""
        seen = set()
        for _ in range(times):
            assertion = signer.sign(claims_of(keyed.client_id, live_metadata["token_endpoint"]))
            async with httpx.AsyncClient(base_url=live_url) as http:
                seen.add((await http.post(TOKEN, data=grant(assertion))).status_code)
        return seen

    assert await statuses(keyed.signer) == {200}  # both workers now know the client and its key
    new = new_signer("P-256")
    replaced = await client.put(f"{CLIENTS}/{keyed.client_id}/jwks", json=jwks(new), headers=admin.headers)
    assert replaced.status_code == 200, replaced.text
    assert await statuses(keyed.signer) == {401}
    assert await statuses(new) == {200}


# --- the scheduled purge ---------------------------------------------------------------------------------------


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_the_purge_forgets_the_jtis_of_expired_assertions_only(
    client: Client, keyed: KeyedClient, settings: Settings, pool: asyncpg.Pool, database_url: str
) -> None:
    live = keyed.signer.sign(claims_of(keyed.client_id, token_endpoint(settings)))
    assert (await client.post(TOKEN, data=grant(live))).status_code == 200
    expired_at = datetime.now(UTC) - timedelta(seconds=1)
    await pool.execute(
        "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES ($1, 'expired', $2)",
        uuid.UUID(keyed.client_id),
        expired_at,
    )
    deleted = await purge_expired_credentials(pool, settings)
    assert deleted["client_assertions"] == 1
    assert await spent_jtis(database_url) == [unverified_parts(live)[1]["jti"]]
    assert_oauth_error(await client.post(TOKEN, data=grant(live)), 401, "invalid_client")  # still spent
