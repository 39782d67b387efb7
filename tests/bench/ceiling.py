"""The ceiling: a bare Litestar app on the same granian set-up, answering with the same bytes (health) or
the same rows through a plain asyncpg pool. What the stack costs is Accounts' distance to this."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar, Response, get, patch, post
from litestar.params import HeaderParameter
from nacl.signing import SigningKey

# Fixed column names, not input: the f-strings below build no SQL from the request.
COLUMNS = (
    "id, email, username, full_name, bio, is_active, is_superuser, email_verified_at, created_at, updated_at, version"
)
_encode = msgspec.json.Encoder().encode
_encode_msgpack = msgspec.msgpack.Encoder().encode
_pool: asyncpg.Pool | None = None


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return dict(record)


async def _open() -> None:
    global _pool  # noqa: PLW0603 - one pool per worker process
    _pool = await asyncpg.create_pool(os.environ["BENCH_DSN"], min_size=10, max_size=10)


async def _close() -> None:
    if _pool is not None:
        await _pool.close()


@get("/health/live")
async def live() -> Response[bytes]:
    return Response(b'{"status":"ok"}', media_type="application/json")


@get("/api/v1/users/{user_id:str}")
async def get_user(user_id: str, accept: Annotated[str, HeaderParameter(name="Accept")] = "") -> Response[bytes]:
    assert _pool is not None
    record = await _pool.fetchrow(f"SELECT {COLUMNS} FROM users WHERE id = $1::uuid", user_id)  # noqa: S608
    if "msgpack" in accept:
        return Response(_encode_msgpack(_row(record)), media_type="application/msgpack")
    return Response(_encode(_row(record)), media_type="application/json")


@get("/api/v1/users")
async def list_users(limit: int = 20, offset: int = 0) -> Response[bytes]:
    """The page and its total in the same single statement Accounts sends (counts from `user_counts`)."""
    assert _pool is not None
    records = await _pool.fetch(
        "SELECT (SELECT coalesce(sum(users), 0)::bigint FROM user_counts) AS total, page.*"  # noqa: S608
        f" FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT {COLUMNS} FROM users"
        " ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2) AS page ON true",
        limit,
        offset,
    )
    items = [{k: v for k, v in r.items() if k != "total"} for r in records if r["id"] is not None]
    body = {"items": items, "total": records[0]["total"], "limit": limit, "offset": offset}
    return Response(_encode(body), media_type="application/json")


@patch("/api/v1/users/{user_id:str}")
async def update_user(user_id: str, data: dict[str, Any]) -> Response[bytes]:
    assert _pool is not None
    record = await _pool.fetchrow(
        f"UPDATE users SET bio = $2, updated_at = now() WHERE id = $1::uuid RETURNING {COLUMNS}",  # noqa: S608
        user_id,
        data["bio"],
    )
    return Response(_encode(_row(record)), media_type="application/json")


@post("/api/v1/auth/token")
async def client_credentials(
    authorization: Annotated[str, HeaderParameter(name="Authorization")], body: bytes
) -> Response[bytes]:
    """The client-credentials grant at its barest: the Basic header checked against the secret's SHA-256 in constant
    time, and the same RFC 9068 claims signed with the same key and library as Accounts (libsodium, the compact JWS
    put together by hand)."""
    client_id, _, secret = base64.b64decode(authorization.removeprefix("Basic ")).decode().partition(":")
    if b"client_credentials" not in body or not hmac.compare_digest(
        hashlib.sha256(secret.encode()).digest(), _CLIENT_SECRET_HASH
    ):
        return Response(b'{"error":"invalid_client"}', status_code=401, media_type="application/json")
    now = int(time.time())
    claims = {"iss": "http://127.0.0.1", "aud": "accounts", "iat": now, "nbf": now, "exp": now + 900}
    claims |= {"sub": client_id, "client_id": client_id, "scope": "users:read", "jti": secrets.token_hex(16)}
    signed = _JWS_HEADER + b"." + _segment(_encode(claims))
    token = (signed + b"." + _segment(_SIGNING_KEY.sign(signed).signature)).decode()
    body = {"access_token": token, "token_type": "Bearer", "expires_in": 900, "scope": "users:read"}
    return Response(_encode(body), media_type="application/json", headers={"Cache-Control": "no-store"})


def _segment(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _load_signing_key(path: str) -> SigningKey:
    private_key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    assert isinstance(private_key, Ed25519PrivateKey)
    return SigningKey(private_key.private_bytes_raw())


_KEY_FILE = os.environ.get("BENCH_PRIVATE_KEY_FILE")
_SIGNING_KEY = _load_signing_key(_KEY_FILE) if _KEY_FILE else None
_JWS_HEADER = _segment(_encode({"alg": "EdDSA", "kid": "bench", "typ": "at+jwt"}))
_CLIENT_SECRET_HASH = hashlib.sha256(os.environ.get("BENCH_CLIENT_SECRET", "").encode()).digest()


def create_app() -> Litestar:
    return Litestar(
        [live, get_user, list_users, update_user, client_credentials],
        on_startup=[_open],
        on_shutdown=[_close],
        openapi_config=None,
    )
