"""What each API worker remembers about credentials, kept true by PostgreSQL notifications.

Access tokens verify without the database, but a deactivated user, a changed password or a revoked
API key must stop working at once. Each worker caches the few facts that decide that, and a trigger
on `users` and `api_keys` (migration 0002) sends `NOTIFY accounts_auth` on every change to them,
which evicts the entry in every worker. While the listening connection is down nothing is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.auth.models import ApiKey

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
        self._generation = 0
        self._listener: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
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

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        table, _, row_id = str(payload).partition(":")
        if row_id == "*":
            self._generation += 1
            self._users.clear() if table == "users" else self._keys.clear()
            return
        with contextlib.suppress(ValueError):
            (self.forget_user if table == "users" else self.forget_api_key)(UUID(row_id))

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._listen_dsn, timeout=5)
        await connection.add_listener(CHANNEL, self._on_notification)
        connection.add_termination_listener(self._on_lost)
        self._listener = connection

    def _on_lost(self, _connection: object) -> None:
        self._listener = None
        self._generation += 1
        self._users.clear()
        self._keys.clear()
        if not self._closed:
            log.warning("credential cache lost its notification connection; reconnecting")
            self._reconnect = asyncio.create_task(self._keep_listening())

    async def _keep_listening(self) -> None:
        while not self._closed and self._listener is None:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(RECONNECT_SECONDS)
