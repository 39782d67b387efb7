"""The feed misses nothing: readers polling while many writers commit, out of id order, see every committed
event exactly once, in cursor order, and none that rolled back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest

from accounts.events.services import START, EventFeed, Position, Subject, record_on

WRITERS = 24
TRANSACTIONS = 12


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=WRITERS + 4)
    yield pool
    await pool.close()


async def write(pool: asyncpg.Pool, writer: int, committed: set[str], done: asyncio.Event) -> None:
    """Transactions of 1-3 events; some held open (later xids commit first), some rolled back."""
    rng = random.Random(writer)
    async with pool.acquire() as connection:
        for _ in range(TRANSACTIONS):
            marks = [f"{writer}-{uuid4()}" for _ in range(rng.randint(1, 3))]
            rollback = rng.random() < 0.2
            transaction = connection.transaction()
            await transaction.start()
            for mark in marks:
                await record_on(connection, "user.updated", Subject("user", uuid4()), {"mark": mark})
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.02, 0.08]))  # held open: younger xids commit before it
            if rollback:
                await transaction.rollback()
            else:
                await transaction.commit()
                committed.update(marks)
    done.set()


async def test_concurrent_writers_and_a_polling_reader(pool: asyncpg.Pool) -> None:
    committed: set[str] = set()
    finished = [asyncio.Event() for _ in range(WRITERS)]
    writers = [asyncio.create_task(write(pool, n, committed, finished[n])) for n in range(WRITERS)]
    feed = EventFeed(pool)
    seen: list[str] = []
    positions: list[Position] = []
    cursor = START
    deadline = asyncio.get_running_loop().time() + 60
    # Until the writers are done and all they committed has been read; a transaction held open elsewhere on the
    # server holds the feed back (never loses from it), hence a generous deadline rather than a count of polls.
    while not (all(event.is_set() for event in finished) and len(seen) >= len(committed)):
        assert asyncio.get_running_loop().time() < deadline, "the feed did not catch up"
        batch = await feed.read(cursor, limit=7)
        for item in batch.items:
            seen.append(item.event.data["mark"])
            positions.append(item.position)
        assert batch.next >= cursor
        cursor = batch.next
        if not batch.items:
            await asyncio.sleep(0.005)
    # Nothing more: no rolled-back event, nothing twice.
    assert (await feed.read(cursor)).items == []
    await asyncio.gather(*writers)
    assert len(seen) == len(set(seen)), "an event was read twice"
    assert set(seen) == committed, "missed or rolled back"
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert len(committed) > WRITERS * TRANSACTIONS  # the test wrote enough to mean something


async def test_a_late_commit_is_not_passed(pool: asyncpg.Pool) -> None:
    """An older transaction still open holds back the younger one's events until it ends; then both come, the
    older first, and a rolled-back one never."""
    feed = EventFeed(pool)
    cursor = await feed.head()
    async with pool.acquire() as older, pool.acquire() as younger, pool.acquire() as doomed:
        held = older.transaction()
        await held.start()
        await record_on(older, "user.created", Subject("user", "older"))
        lost = doomed.transaction()
        await lost.start()
        await record_on(doomed, "user.created", Subject("user", "rolled-back"))
        await record_on(younger, "user.created", Subject("user", "younger"))  # commits at once
        batch = await feed.read(cursor)
        assert batch.items == []
        await held.commit()
        await lost.rollback()
    items: list[str] = []
    while len(items) < 2:  # a transaction open elsewhere on the server may hold them back a moment
        batch = await feed.read(batch.next)
        items += [str(item.event.subject.id) for item in batch.items]
        await asyncio.sleep(0.01)
    assert items == ["older", "younger"]
    assert (await feed.read(batch.next)).items == []
