"""The `jobs` rows `JobStore.create` writes: concurrent callers share inserts, yet each gets its own row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from accounts.jobs.services import JobStore


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_concurrent_creates_each_get_their_own_row(pool: asyncpg.Pool) -> None:
    store = JobStore(pool)
    run = uuid.uuid4().hex[:8]
    asked = [(f"test_{run}_{n % 7}", f"user:{run}-{n}") for n in range(300)]

    job_ids = await asyncio.gather(*(store.create(kind, owner) for kind, owner in asked))

    assert len(set(job_ids)) == len(asked)
    for job_id, (kind, owner) in zip(job_ids, asked, strict=True):
        row = await store.get(job_id)
        assert (row["kind"], row["owner"], row["status"], row["attempts"]) == (kind, owner, "queued", 0)


async def test_a_caller_cancelled_while_waiting_for_its_turn_leaves_no_row(pool: asyncpg.Pool) -> None:
    store = JobStore(pool)
    kind = f"test_cancelled_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")  # the first insert waits on this
        first = asyncio.create_task(store.create("test_first", "user:first"))
        await asyncio.sleep(0.2)
        waiting = asyncio.create_task(store.create(kind, "user:cancelled"))
        await asyncio.sleep(0.2)
        waiting.cancel()
    first_id = await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.2)  # the next batch, had it kept the cancelled row, is written by now

    assert (await store.get(first_id))["kind"] == "test_first"
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", kind) == 0


async def test_a_failed_insert_fails_its_callers_and_the_next_create_works(pool: asyncpg.Pool) -> None:
    store = JobStore(pool)

    with pytest.raises(asyncpg.StringDataRightTruncationError):
        await store.create("test_too_long", "user:" + "x" * 100)  # owner is varchar(64)

    job_id = await store.create("test_after_failure", "user:after")
    assert (await store.get(job_id))["owner"] == "user:after"
