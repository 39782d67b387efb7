"""The hot paths' asyncpg pool: a connection given back costs no round trip, and still comes back clean."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from accounts.config import Settings
from accounts.core.db import create_request_pool


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_request_pool(
        settings.asyncpg_database_url, msgspec.structs.replace(settings, database_pool_size=1)
    )
    yield pool
    await pool.close()


async def _last_statement(settings: Settings, pid: int) -> str:
    observer = await asyncpg.connect(settings.asyncpg_database_url)
    try:
        return await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await observer.close()


async def test_a_connection_given_back_sends_nothing_more(pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as connection:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
    # asyncpg's default reset would have run `SELECT pg_advisory_unlock_all(); CLOSE ALL; ...` on it by now.
    assert await _last_statement(settings, pid) == "SELECT pg_backend_pid()"


async def test_a_connection_given_back_in_a_transaction_comes_back_out_of_it(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute("BEGIN")
        await connection.execute("SET LOCAL lock_timeout = '1s'")
        await connection.execute("CREATE TEMPORARY TABLE left_behind (n int) ON COMMIT DROP")
    async with pool.acquire() as connection:  # the same connection: the pool holds one
        assert not connection.is_in_transaction()
        assert await connection.fetchval("SHOW lock_timeout") == "0"
        assert await connection.fetchval("SELECT to_regclass('pg_temp.left_behind')") is None
