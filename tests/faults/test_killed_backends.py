"""Killed database connections under write load: while eight clients create users through `accounts serve`,
every connection to the test's database is terminated every two seconds (as a failover, a restarted
PgBouncer or an administrator does). No acknowledged write may be lost, no conflict invented, and every
refusal must be a 503 problem a client can retry after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.database import insert_api_key
from tests.faults.load import NO_BROKEN_RULES, Tally, UserWrites, kept_emails
from tests.faults.support import RecordFigures, Serve

CLIENTS = 8
IDEMPOTENT_CLIENTS = 3
LOAD_SECONDS = 15.0
KILL_EVERY = 2.0
CASE_SECONDS = 60.0
"""The whole case, load and checks, so that a hang anywhere fails it instead of using up CI's budget."""
SCOPES = ["users:read", "users:write"]


@pytest.fixture
def base_url(own_database: str, serve: Serve) -> Iterator[str]:
    with serve(DATABASE_URL=own_database) as url:
        yield url


async def kill_backends(server_url: str, database: str, *, every: float, until: float) -> list[int]:
    """Terminate every connection to `database` (but the killer's) each `every` seconds until `until`
    (monotonic); returns how many each round killed."""
    killer = await asyncpg.connect(server_url)
    loop = asyncio.get_running_loop()
    killed = []
    try:
        while loop.time() < until:
            terminated = await killer.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            killed.append(sum(row[0] for row in terminated))
            await asyncio.sleep(min(every, max(until - loop.time(), 0)))
    finally:
        await killer.close()
    return killed


async def test_killed_connections_lose_no_acknowledged_write_and_are_503s_not_409s(
    base_url: str, own_database: str, server_url: str, record_figures: RecordFigures
) -> None:
    api_key = await insert_api_key(own_database, SCOPES)
    database = make_url(own_database).database
    assert database is not None

    async with asyncio.timeout(CASE_SECONDS):
        async with UserWrites(base_url, api_key, clients=CLIENTS, idempotent=IDEMPOTENT_CLIENTS) as writes:
            until = asyncio.get_running_loop().time() + LOAD_SECONDS
            killed = await kill_backends(server_url, database, every=KILL_EVERY, until=until)
        tally = Tally(writes.answers, await kept_emails(own_database))

    record_figures(tally.figures() | {"kill rounds": len(killed), "connections killed": sum(killed)})
    assert sum(killed) > 0, "the killer found no connection of the service to kill"
    assert tally.acknowledged, "no write was acknowledged: the load never reached the database"
    assert tally.broken_rules() == NO_BROKEN_RULES, tally.examples()
