"""Updates of one user racing each other (accounts.users.repository.UserRepository.update with events): each
records what it changed against the row it replaced, not against a snapshot another update has since overwritten.
An update reads the row without a lock and is decided again under the row's lock when a write came in between."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from accounts.users.repository import UserRepository
from tests.integration.auth.support import insert_user

WRITERS = 16
SYSTEM = ("system", None, None)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=WRITERS, max_size=WRITERS)
    yield pool
    await pool.close()


async def updates_of(pool: asyncpg.Pool, user_id: str) -> list[dict[str, object]]:
    records = await pool.fetch(
        "SELECT data FROM events WHERE type = 'user.updated' AND subject_id = $1 ORDER BY seq", user_id
    )
    return [msgspec.json.decode(record["data"])["changes"] for record in records]


async def test_racing_updates_to_one_value_record_one_change(database_url: str, pool: asyncpg.Pool) -> None:
    account = await insert_user(database_url, None, f"racer-{uuid.uuid4().hex[:8]}")
    users = UserRepository(pool)
    user_id = uuid.UUID(account.id)

    results = await asyncio.gather(*(users.update(user_id, {"bio": "the same"}, None, SYSTEM) for _ in range(WRITERS)))

    assert all(result is not None and result.bio == "the same" for result in results)
    assert {result.version for result in results if result is not None} == set(range(2, WRITERS + 2))
    assert await updates_of(pool, account.id) == [{"bio": "the same"}], "only the first changed anything"


async def test_racing_updates_to_different_values_record_each_change(database_url: str, pool: asyncpg.Pool) -> None:
    account = await insert_user(database_url, None, f"racer-{uuid.uuid4().hex[:8]}")
    users = UserRepository(pool)
    user_id = uuid.UUID(account.id)
    bios = [f"bio {n}" for n in range(WRITERS)]

    await asyncio.gather(*(users.update(user_id, {"bio": bio}, None, SYSTEM) for bio in bios))

    changes = await updates_of(pool, account.id)
    assert sorted(change["bio"] for change in changes) == sorted(bios)  # type: ignore[type-var]


async def test_an_update_of_a_version_that_is_gone_changes_nothing(database_url: str, pool: asyncpg.Pool) -> None:
    account = await insert_user(database_url, None, f"racer-{uuid.uuid4().hex[:8]}")
    users = UserRepository(pool)
    user_id = uuid.UUID(account.id)
    assert await users.update(user_id, {"bio": "first"}, [1], SYSTEM) is not None

    assert await users.update(user_id, {"bio": "late"}, [1], SYSTEM) is None
    assert await users.update(uuid.uuid4(), {"bio": "nobody"}, None, SYSTEM) is None
    assert await updates_of(pool, account.id) == [{"bio": "first"}]
