"""What the auth tests share: paths, accounts made straight in the database, logins, and hand-made JWTs.

Users are inserted with SQL and one argon2 hash per session (a hash costs ~30 ms); tokens always come
from `POST /api/v1/auth/token`, except the hand-made ones that stand for tokens this service never issued.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet, OKPKey
from litestar import Litestar
from litestar.testing import AsyncTestClient
from uuid_utils.compat import uuid7

from accounts.config import Settings
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]

AUTH = "/api/v1/auth"
TOKEN = f"{AUTH}/token"
REFRESH = f"{AUTH}/refresh"
LOGOUT = f"{AUTH}/logout"
LOGOUT_ALL = f"{AUTH}/logout-all"
REGISTER = f"{AUTH}/register"
USERS = "/api/v1/users"
ME = f"{USERS}/me"
MY_PASSWORD = f"{ME}/password"
API_KEYS = "/api/v1/api-keys"
JWKS = "/.well-known/jwks.json"

PASSWORD = "correct horse battery staple"
CHALLENGE = 'Bearer realm="accounts"'


@dataclass(frozen=True)
class Account:
    """A user row made for a test, and the password that logs it in."""

    id: str
    username: str
    email: str
    password: str = PASSWORD


@dataclass(frozen=True)
class LoggedIn:
    """An account and the token pair its login returned."""

    account: Account
    access_token: str
    refresh_token: str

    @property
    def id(self) -> str:
        return self.account.id

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


MakeUser = Callable[..., Awaitable[Account]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def insert_user(
    database_url: str,
    hashed_password: str | None,
    username: str,
    *,
    admin: bool = False,
    active: bool = True,
) -> Account:
    """A user written straight into the database, with a ready-made password hash."""
    user_id = uuid7()
    email = f"{username}@example.com"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO users (id, email, username, hashed_password, is_active, is_superuser, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, now(), now())",
            user_id,
            email,
            username,
            hashed_password,
            active,
            admin,
        )
    finally:
        await connection.close()
    return Account(id=str(user_id), username=username, email=email)


async def sql(database_url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on the test database, bypassing the service."""
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetch(statement, *args)
    finally:
        await connection.close()


async def request_token(client: Client, username: str, password: str) -> httpx.Response:
    return await client.post(TOKEN, data={"grant_type": "password", "username": username, "password": password})


async def log_in(client: Client, account: Account, *, identifier: str | None = None) -> LoggedIn:
    response = await request_token(client, identifier or account.username, account.password)
    assert response.status_code == 200, response.text
    pair = response.json()
    return LoggedIn(account=account, access_token=pair["access_token"], refresh_token=pair["refresh_token"])


def assert_unauthenticated(response: httpx.Response, *, error: str | None = "invalid_token") -> dict[str, Any]:
    """A 401 problem with an RFC 6750 challenge naming the realm (and `error` when credentials were sent)."""
    problem = assert_problem(response, 401)
    assert problem["type"] == "/problems/unauthenticated"
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith(CHALLENGE), response.headers
    if error is None:
        assert challenge == CHALLENGE
    else:
        assert f'error="{error}"' in challenge, challenge
    return problem


# RFC 6749 section 5.2's codes (with RFC 7009's unsupported_token_type): nothing else may appear in `error`.
OAUTH_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "unsupported_token_type",
    "temporarily_unavailable",
    "server_error",
}


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 section 5.2 error: JSON with `error` (and a description), never cached; a failed client
    authentication is a 401 with a Basic challenge."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("cache-control") == "no-store", response.headers
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["error"] in OAUTH_ERRORS
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic "), response.headers
    return body


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 2.0) -> float:
    """Poll `check` until it holds; returns the seconds it took, fails after `within` seconds."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, f"still not true after {within} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# --- hand-made JWTs -----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a JWT, read without checking anything."""
    header, payload, _ = token.split(".")
    return decode_part(header), decode_part(payload)


def decode_part(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def claims_for(settings: Settings, user_id: str, **overrides: Any) -> dict[str, Any]:
    """Claims as the service puts them in an access token of a plain user, valid for ten minutes."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.jwt_audience,
        "sub": user_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "ver": 0,
        "roles": ["user"],
        "scope": "",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(claims: dict[str, Any], key: OKPKey, *, kid: str | None) -> str:
    """An EdDSA JWT signed by an independent library (joserfc)."""
    header: dict[str, Any] = {"alg": "EdDSA", "typ": "at+jwt"}
    if kid is not None:
        header["kid"] = kid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # RFC 9864 prefers "Ed25519"; the service uses "EdDSA"
        return jwt.encode(header, claims, key, algorithms=["EdDSA"])


def sign_raw(header: dict[str, Any], claims: dict[str, Any], key: OKPKey) -> str:
    """An Ed25519 signature over any header, even one a JWT library would refuse to write."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    return f"{signing_input}.{b64url(key.private_key.sign(signing_input.encode()))}"


def verify_with_jwks(token: str, jwks: dict[str, Any]) -> jwt.Token:
    """Verify `token` with joserfc and nothing but the published JWK Set (signature only: claims are the caller's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["EdDSA"])


def new_ed25519_pem() -> bytes:
    """A new Ed25519 private key as unencrypted PKCS#8 PEM."""
    pem: bytes = OKPKey.generate_key("Ed25519").as_pem(private=True)
    return pem
