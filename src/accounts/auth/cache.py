"""What each API worker remembers about credentials, kept true by PostgreSQL notifications.

Access tokens verify without the database, but a deactivated user, a changed password, a revoked API
key, a deleted service client, a revoked access token or an ended session must stop working at once.
Each worker caches the few facts that decide that, and triggers on `users`, `api_keys`, `oauth_clients`
(migrations 0002, 0010) send `NOTIFY accounts_auth` on every change to them, which evicts the entry in
every worker; an insert into `revoked_tokens` adds its jti to every worker's refusals, and an ended
session (migration 0011) its id. While the listening connection is down nothing is cached and each
revocation is looked up. A client's public keys (migration 0015) are cached with it, parsed once.

The jti of each client assertion (RFC 7523) is spent here too, in a statement committed on its own: an assertion
works once, whatever becomes of the request that presented it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.auth.models import ApiKey, RevokedToken, UsedClientAssertion, UserSession
from accounts.auth.tokens import LEEWAY_SECONDS, MAX_ACCESS_TOKEN_TTL, AccessClaims
from accounts.clients.keys import ClientKey, stored_keys
from accounts.clients.models import OAuthClient
from accounts.core.db import DATABASE_ERRORS
from accounts.core.security import same_hash

CHANNEL = "accounts_auth"
MAX_ENTRIES = 100_000
RECONNECT_SECONDS = 1.0

log = structlog.get_logger("accounts.auth.cache")


class UserState(NamedTuple):
    is_active: bool
    is_superuser: bool
    token_version: int


class ApiKeyState(NamedTuple):
    id: UUID
    secret_hash: bytes
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None


class ClientState(NamedTuple):
    id: UUID
    scopes: frozenset[str]
    secret_hash: bytes
    previous_secret_hash: bytes | None
    previous_secret_expires_at: datetime | None
    keys: tuple[ClientKey, ...]
    """The public keys that verify its `private_key_jwt` assertions (none: it authenticates with its secret only)."""

    def accepts(self, secret: str) -> bool:
        """The secret is the client's, or its previous one within the rotation's overlap; both are compared, in
        constant time, whichever matches."""
        current = same_hash(secret, self.secret_hash)
        previous = self.previous_secret_hash is not None and same_hash(secret, self.previous_secret_hash)
        in_overlap = self.previous_secret_expires_at is not None and self.previous_secret_expires_at > datetime.now(UTC)
        return current or (previous and in_overlap)


UserLoader = Callable[[UUID], Awaitable["tuple[bool, bool, int] | None"]]
"""(is_active, is_superuser, token_version) of a user, or None (accounts.users.services.UserService.credentials)."""


class CredentialCache:
    def __init__(self, load_user: UserLoader, engine: AsyncEngine, listen_dsn: str) -> None:
        self._load_user = load_user
        self._engine = engine
        self._listen_dsn = listen_dsn
        self._users: dict[UUID, UserState | None] = {}
        self._keys: dict[str, ApiKeyState] = {}
        self._key_prefixes: dict[UUID, str] = {}
        self._clients: dict[UUID, ClientState] = {}
        self._revoked: dict[str, int] = {}
        """jti -> expiry of the access tokens revoked before they expire; complete while the listener is up."""
        self._ended_sessions: dict[UUID, int] = {}
        """session id -> when it ended, for the sessions ended within the longest access-token lifetime."""
        self._generation = 0
        self._listener: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        with contextlib.suppress(*DATABASE_ERRORS):
            await self._listen()
        if self._listener is None:
            self._reconnect = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._listener is not None:
            await self._listener.close()

    async def user(self, user_id: UUID) -> UserState | None:
        if user_id in self._users:
            return self._users[user_id]
        generation = self._generation
        row = await self._load_user(user_id)
        state = UserState(*row) if row else None
        self._remember(self._users, user_id, state, generation)
        return state

    async def api_key(self, prefix: str) -> ApiKeyState | None:
        if prefix in self._keys:
            return self._keys[prefix]
        generation = self._generation
        columns = (ApiKey.id, ApiKey.secret_hash, ApiKey.scopes, ApiKey.expires_at, ApiKey.revoked_at)
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(*columns, ApiKey.last_used_at).where(ApiKey.prefix == prefix))
            ).first()
        if row is None:  # not remembered: anyone can send well-formed keys with made-up prefixes
            return None
        revoked = row.revoked_at is not None
        state = ApiKeyState(row.id, row.secret_hash, frozenset(row.scopes), row.expires_at, revoked, row.last_used_at)
        self._key_prefixes[row.id] = prefix
        self._remember(self._keys, prefix, state, generation)
        return state

    async def client(self, client_id: UUID) -> ClientState | None:
        if client_id in self._clients:
            return self._clients[client_id]
        generation = self._generation
        columns = (OAuthClient.scopes, OAuthClient.secret_hash, OAuthClient.previous_secret_hash)
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(*columns, OAuthClient.previous_secret_expires_at, OAuthClient.jwks).where(
                        OAuthClient.id == client_id
                    )
                )
            ).first()
        if row is None:  # not remembered, as for API keys: made-up ids cost a lookup, never memory
            return None
        state = ClientState(
            client_id,
            frozenset(row.scopes),
            row.secret_hash,
            row.previous_secret_hash,
            row.previous_secret_expires_at,
            stored_keys(row.jwks),
        )
        self._remember(self._clients, client_id, state, generation)
        return state

    async def spend_assertion(self, client_id: UUID, jti: str, expires_at: datetime) -> bool:
        """Whether this is the first use of the client's assertion `jti`; it is refused from now until `expires_at`.
        Committed at once, on its own: of two requests with one assertion, however concurrent, exactly one wins."""
        statement = (
            insert(UsedClientAssertion)
            .values(client_id=client_id, jti=jti, expires_at=expires_at)
            .on_conflict_do_nothing()
            .returning(UsedClientAssertion.jti)
        )
        try:
            async with self._engine.begin() as connection:
                return await connection.scalar(statement) is not None
        except IntegrityError:  # the client was deleted since it was read: its assertions are worth nothing now
            return False

    async def is_revoked(self, jti: str) -> bool:
        """Whether the access token with this jti was revoked (RFC 7009) before it expires."""
        if self._listener is not None:
            return jti in self._revoked
        async with self._engine.connect() as connection:
            return await connection.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None

    async def session_ended(self, session_id: UUID) -> bool:
        """Whether the session (login) an access token was issued in has ended."""
        if self._listener is not None:
            return session_id in self._ended_sessions
        async with self._engine.connect() as connection:
            ended = await connection.scalar(select(UserSession.revoked_at).where(UserSession.id == session_id))
        return ended is not None

    def note_session_ended(self, session_id: UUID, ended_at: int) -> None:
        """Refuse the session's access tokens in this worker (after the commit that ended it); the others hear it from
        the database."""
        if len(self._ended_sessions) >= MAX_ENTRIES:
            oldest = time.time() - MAX_ACCESS_TOKEN_TTL - LEEWAY_SECONDS
            self._ended_sessions = {key: at for key, at in self._ended_sessions.items() if at > oldest}
        self._ended_sessions[session_id] = ended_at

    def note_revoked(self, jti: str, expires: int) -> None:
        """Refuse the token in this worker (after the commit that revoked it); the others hear it from the database."""
        if len(self._revoked) >= MAX_ENTRIES:
            now = time.time()
            self._revoked = {key: exp for key, exp in self._revoked.items() if exp > now}
        self._revoked[jti] = expires

    async def holder(self, claims: AccessClaims) -> UserState | ClientState | None:
        """Whom a validly signed access token speaks for, if it still works: None once it is revoked, its user
        deactivated or logged out everywhere (a newer token version), or its client deleted."""
        if await self.is_revoked(claims.jti):
            return None
        if claims.sid is not None and await self.session_ended(claims.sid):
            return None
        if claims.client_id is not None:
            return await self.client(claims.client_id)
        state = await self.user(claims.sub)
        if state is None or not state.is_active or state.token_version != claims.ver:
            return None
        return state

    def _remember(self, cache: dict[Any, Any], key: Any, value: Any, generation: int) -> None:
        # Skip if a notification arrived while we were reading: the row read may be the old one.
        if self._listener is None or generation != self._generation:
            return
        if len(cache) >= MAX_ENTRIES:
            cache.clear()
        cache[key] = value

    def forget_user(self, user_id: UUID) -> None:
        """Drop what this worker knows of the user now; other workers hear it from the database on commit."""
        self._generation += 1
        self._users.pop(user_id, None)

    def forget_api_key(self, key_id: UUID) -> None:
        self._generation += 1
        if (prefix := self._key_prefixes.pop(key_id, None)) is not None:
            self._keys.pop(prefix, None)

    def forget_client(self, client_id: UUID) -> None:
        self._generation += 1
        self._clients.pop(client_id, None)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        table, _, row_id = str(payload).partition(":")
        if table == "revoked_tokens":
            jti, _, expires = row_id.partition(":")
            with contextlib.suppress(ValueError):
                self.note_revoked(jti, int(expires))
            return
        if table == "sessions":
            session_id, _, ended_at = row_id.partition(":")
            with contextlib.suppress(ValueError):
                self.note_session_ended(UUID(session_id), int(ended_at))
            return
        caches: dict[str, tuple[dict[Any, Any], Callable[[UUID], None]]] = {
            "users": (self._users, self.forget_user),
            "api_keys": (self._keys, self.forget_api_key),
            "oauth_clients": (self._clients, self.forget_client),
        }
        if table not in caches:
            return
        cache, forget = caches[table]
        if row_id == "*":
            self._generation += 1
            cache.clear()
            if table == "api_keys":
                self._key_prefixes.clear()
            return
        with contextlib.suppress(ValueError):
            forget(UUID(row_id))

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._listen_dsn, timeout=5)
        await connection.add_listener(CHANNEL, self._on_notification)
        # Listening first, then reading: a revocation committed in between is in one or both, never in neither.
        rows = await connection.fetch(
            "SELECT jti, extract(epoch FROM expires_at)::bigint AS exp FROM revoked_tokens WHERE expires_at > now()"
        )
        self._revoked.update((row["jti"], row["exp"]) for row in rows)
        rows = await connection.fetch(
            "SELECT id, extract(epoch FROM revoked_at)::bigint AS ended_at FROM sessions"
            " WHERE revoked_at > now() - make_interval(secs => $1)",
            MAX_ACCESS_TOKEN_TTL + LEEWAY_SECONDS,
        )
        self._ended_sessions.update((UUID(bytes=row["id"].bytes), row["ended_at"]) for row in rows)
        connection.add_termination_listener(self._on_lost)
        self._listener = connection

    def _on_lost(self, _connection: object) -> None:
        self._listener = None
        self._generation += 1
        self._users.clear()
        self._keys.clear()
        self._clients.clear()
        if not self._closed:
            log.warning("credential cache lost its notification connection; reconnecting")
            self._reconnect = asyncio.create_task(self._keep_listening())

    async def _keep_listening(self) -> None:
        while not self._closed and self._listener is None:
            try:
                await self._listen()
            except DATABASE_ERRORS:
                await asyncio.sleep(RECONNECT_SECONDS)
