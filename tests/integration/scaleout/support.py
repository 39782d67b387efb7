"""What the scale-out tests share, fixtures aside: a replicated database and waiting for its replica, users signed
up through the API, one-off queries, and holding PgBouncer's server connections open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tests.integration.auth.support import PASSWORD

REPLICATED_DATABASE = "accounts_replicated"


@dataclass(frozen=True)
class Replication:
    """URLs of one database on a primary and on its streaming replica."""

    primary: str
    replica: str

    async def caught_up(self) -> None:
        await caught_up(self.primary, self.replica)

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """The replica replays what was written before the block, and nothing written in it until it ends."""
        await self.caught_up()
        await fetchval(self.replica, "SELECT pg_wal_replay_pause()")
        try:
            async with asyncio.timeout(30):
                while await fetchval(self.replica, "SELECT pg_get_wal_replay_pause_state()") != "paused":
                    await asyncio.sleep(0.05)
            yield
        finally:
            await fetchval(self.replica, "SELECT pg_wal_replay_resume()")
        await self.caught_up()


@dataclass(frozen=True)
class SignedUp:
    """A user registered and logged in through the API."""

    user: dict[str, Any]
    headers: dict[str, str]
    refresh_token: str


async def sign_up(client: httpx.AsyncClient) -> SignedUp:
    name = f"user{uuid.uuid4().hex[:12]}"
    email = f"{name}@example.com"
    created = await client.post("/api/v1/auth/register", json={"email": email, "username": name, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return SignedUp(created.json(), *await log_in(client, email))


async def log_in(client: httpx.AsyncClient, email: str) -> tuple[dict[str, str], str]:
    """The auth header and the refresh token of a password login."""
    tokens = await client.post(
        "/api/v1/auth/token", data={"grant_type": "password", "username": email, "password": PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}, tokens.json()["refresh_token"]


async def caught_up(primary: str, replica: str) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    written = await fetchval(primary, "SELECT pg_current_wal_lsn()::text")
    async with asyncio.timeout(30):
        while not await fetchval(replica, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", written):
            await asyncio.sleep(0.05)


async def fetchval(url: str, query: str, *args: object) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


StartPgBouncer = Callable[..., AbstractAsyncContextManager[str]]


async def open_server_connections(url: str, count: int) -> None:
    """Hold `count` transactions at once through PgBouncer, so it opens that many server connections."""
    clients = [await asyncpg.connect(url, statement_cache_size=0) for _ in range(count)]
    try:
        await asyncio.gather(*(client.execute("SELECT pg_sleep(0.2)") for client in clients))
    finally:
        await asyncio.gather(*(client.close() for client in clients))
