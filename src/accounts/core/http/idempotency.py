"""Idempotent creates: a `POST` with an `Idempotency-Key` runs once, and its retries get the first answer.

The first request with a key claims it by inserting a row in a transaction that stays open while the
request runs; a concurrent request with the same key waits on that row, then replays what the first
stored. If the first fails (5xx, 429, a crash), its transaction rolls back and the key is free again.
Keys belong to the caller (a user, an API key, or anonymous callers together) and expire after
IDEMPOTENCY_KEY_TTL seconds. Only the caller's key opens a stored response (see IdempotencyRecord).
Routes opt in with `middleware=[IdempotencyMiddleware]`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from http import HTTPStatus
from typing import Any, TypeAlias

import asyncpg
import msgspec
import structlog
from advanced_alchemy.base import DefaultBase
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from litestar import Request
from litestar.middleware import MiddlewareProtocol
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import DateTime, Index, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.errors import Conflict, FieldError, InvalidInput, ServiceError
from accounts.core.http.bodies import media_type_of
from accounts.core.security import require_credentials

HEADER = "Idempotency-Key"
DESCRIPTION = (
    "A unique string per operation (a UUID is ideal). A retry with the same key and the same body returns "
    "the first response, marked `Idempotent-Replayed: true`, without doing the work again; the same key with "
    "another body is rejected with 422. Keys belong to the caller and expire after 24 hours by default."
)
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII: what SDKs send (UUIDs, ULIDs, hashes)
_KEY = re.compile(KEY_PATTERN)
_REPLAYED = frozenset({b"content-type", b"location", b"etag", b"vary", b"cache-control"})
_STORED_STATUSES = range(200, 500)
_NOT_STORED = frozenset({408, 409, 425, 429})  # worth retrying: the retry must run again
_WAIT_FOR_FIRST = "10s"  # how long a retry waits for a concurrent first request before it gets 409

log = structlog.get_logger("accounts.idempotency")


class IdempotencyRecord(DefaultBase):
    """A claimed key and, once its request finished, the sealed response to replay.

    Nothing here is readable without the caller's key: the row is found by a hash of it, the request
    fingerprint is an HMAC keyed by it, and the response (which may hold a new API key's secret) is
    encrypted with a key derived from it. A database reader learns neither secrets nor passwords.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    caller: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Nonce and AES-GCM ciphertext of the response; NULL until the first request has finished."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Claim:
    """What one caller's key derives: the row's lookup hash, and the key that seals its contents."""

    def __init__(self, caller: str, key: str) -> None:
        self.caller = caller
        material = hashlib.sha256(f"{caller}\0{key}".encode()).digest()
        self.key_hash = hmac.digest(material, b"lookup", "sha256")
        self._secret = hmac.digest(material, b"seal", "sha256")

    def fingerprint(self, *parts: bytes) -> bytes:
        """An HMAC of the request, so the same request gives the same value and nothing else does."""
        mac = hmac.new(self._secret, digestmod="sha256")
        for part in parts:
            mac.update(len(part).to_bytes(8, "big") + part)
        return mac.digest()

    def seal(self, response: StoredResponse) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self._secret).encrypt(nonce, msgspec.msgpack.encode(response), self.key_hash)

    def open(self, sealed: bytes) -> StoredResponse:
        plain = AESGCM(self._secret).decrypt(sealed[:12], sealed[12:], self.key_hash)
        return msgspec.msgpack.decode(plain, type=StoredResponse)


Connection: TypeAlias = "PoolConnectionProxy[Record]"  # asyncpg's proxy is generic only to type checkers
Runner = Callable[[Send], Awaitable[None]]


class KeyReused(ServiceError):
    """422: the key was used before for a different request."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    type = "/problems/idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used for a different request: use a new key for a new request.")


class KeyInUse(Conflict):
    """409: the first request with this key is still running."""

    type = "/problems/idempotency-key-in-use"

    def __init__(self) -> None:
        super().__init__("The first request with this Idempotency-Key is still running; retry shortly.")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class StoredResponse(msgspec.Struct, frozen=True):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    async def replay(self, send: Send) -> None:
        headers = [*self.headers, (b"content-length", b"%d" % len(self.body)), (b"idempotent-replayed", b"true")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class IdempotencyKeys:
    """The `idempotency_keys` table, on the app's asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, ttl: int) -> None:
        self.pool = pool
        self.ttl = timedelta(seconds=ttl)

    async def run_once(self, claim: Claim, request_hash: bytes, run: Runner, send: Send) -> None:
        """Run `run(send)` unless this caller's key already ran: then replay its response (or refuse).

        The work commits before its response is sent (accounts.core.db), and the response is stored after that, so
        only committed work is ever replayed; a 5xx (a failed commit, a lost connection) is not stored at all."""
        capture = _Capture(send)
        try:
            async with self.pool.acquire() as connection, connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = '{_WAIT_FOR_FIRST}'")
                if not await self._claim(connection, claim, request_hash):
                    stored = await self._stored(connection, claim, request_hash)
                else:
                    await run(capture)
                    if capture.replayable:
                        await connection.execute(
                            "UPDATE idempotency_keys SET response = $3 WHERE caller = $1 AND key_hash = $2",
                            claim.caller,
                            claim.key_hash,
                            claim.seal(capture.response()),
                        )
                    else:
                        raise _Release
                    return
        except _Release:
            return
        except asyncpg.LockNotAvailableError:
            raise KeyInUse from None
        except Exception as exc:
            if not capture.started:
                raise
            # The answer is out: a claim being released dies with its connection anyway, while a response that
            # could not be stored leaves only a retry that runs again.
            if capture.replayable:
                log.warning("idempotency record not stored", error=f"{type(exc).__name__}: {exc}"[:500])
            return
        await stored.replay(send)

    async def _claim(self, connection: Connection, claim: Claim, request_hash: bytes) -> bool:
        # A live row blocks this insert until its transaction ends; an expired one is taken over.
        claimed = await connection.fetchval(
            "INSERT INTO idempotency_keys (caller, key_hash, request_hash, expires_at)"
            " VALUES ($1, $2, $3, now() + $4::interval) ON CONFLICT (caller, key_hash) DO UPDATE"
            " SET request_hash = excluded.request_hash, response = NULL, created_at = now(),"
            " expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= now() RETURNING true",
            claim.caller,
            claim.key_hash,
            request_hash,
            self.ttl,
        )
        return bool(claimed)

    @staticmethod
    async def _stored(connection: Connection, claim: Claim, request_hash: bytes) -> StoredResponse:
        row = await connection.fetchrow(
            "SELECT request_hash, response FROM idempotency_keys WHERE caller = $1 AND key_hash = $2",
            claim.caller,
            claim.key_hash,
        )
        if row is None or row["response"] is None:  # purged since the claim failed: rare; a retry settles it
            raise KeyInUse
        if not hmac.compare_digest(row["request_hash"], request_hash):
            raise KeyReused
        return claim.open(row["response"])


async def purge_idempotency_keys(pool: asyncpg.Pool) -> int:
    """Delete the keys (and their stored responses) past IDEMPOTENCY_KEY_TTL; returns how many went."""
    status = await pool.execute("DELETE FROM idempotency_keys WHERE expires_at <= now()")
    return int(status.rsplit(" ", 1)[-1])


class _Release(Exception):
    """The response is not one to replay (a 5xx, a 429...): roll the claim back so a retry runs again."""


class _Capture:
    """A `send` that passes messages on and keeps the status, the replayable headers and the body."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    @property
    def replayable(self) -> bool:
        """Whether this answer is one to replay: not a 5xx, nor a refusal worth retrying (409, 429...)."""
        return self.status in _STORED_STATUSES and self.status not in _NOT_STORED

    def response(self) -> StoredResponse:
        return StoredResponse(self.status, self.headers, b"".join(self.body))

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            self.headers = [(n.lower(), v) for n, v in message.get("headers", []) if n.lower() in _REPLAYED]
        elif message["type"] == "http.response.body":
            self.body.append(message.get("body", b""))
        await self.send(message)


def caller_of(scope: Scope) -> str:
    principal = scope.get("user")
    return "anonymous" if principal is None else str(principal.identity)


async def authenticated_caller_of(request: Request[Any, Any, Any]) -> str:
    """Whose key it is: the caller, authenticated here (401 before anything is stored), since route middleware runs
    before the route's own check; anonymous callers together on a public route."""
    await require_credentials(request)
    return caller_of(request.scope)


class IdempotencyMiddleware(MiddlewareProtocol):
    """Route middleware of the creating `POST`s: without the header, it only passes the request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = next((v for n, v in scope["headers"] if n == b"idempotency-key"), None)
        if key is None:
            await self.app(scope, receive, send)
            return
        text = key.decode("latin-1")
        if not _KEY.fullmatch(text):
            raise InvalidInput(
                f"{HEADER} must be 1 to 255 visible ASCII characters.",
                errors=[FieldError(field=HEADER, message="must be 1 to 255 visible ASCII characters")],
            )
        request: Request[Any, Any, Any] = Request(scope, receive)
        claim = Claim(await authenticated_caller_of(request), text)
        body = await request.body()  # cached on the scope: the handler reads it from there
        fingerprint = claim.fingerprint(request.method.encode(), scope["raw_path"], media_type_of(scope).encode(), body)
        keys: IdempotencyKeys = scope["app"].state.idempotency_keys
        await keys.run_once(claim, fingerprint, partial(self.app, scope, receive), send)
