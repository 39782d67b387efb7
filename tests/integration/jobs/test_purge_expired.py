"""`purge_expired` (accounts.system.jobs), the scheduled clean-up, called as the worker calls it: what has
expired is deleted, what is still live is kept, and old finished jobs take their result files with them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from accounts.config import Settings
from accounts.system.jobs import purge_expired
from tests.integration.auth.support import insert_user

HOUR = timedelta(hours=1)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def insert_idempotency_key(pool: asyncpg.Pool, expires_at: datetime) -> bytes:
    key_hash = os.urandom(32)
    await pool.execute(
        "INSERT INTO idempotency_keys (caller, key_hash, request_hash, response, expires_at)"
        " VALUES ('user:purge', $1, $2, NULL, $3)",
        key_hash,
        os.urandom(32),
        expires_at,
    )
    return key_hash


async def insert_refresh_token(pool: asyncpg.Pool, user_id: str, expires_at: datetime) -> uuid.UUID:
    token_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, now(), now())",
        token_id,
        uuid.UUID(user_id),
        uuid.uuid4(),
        os.urandom(32),
        expires_at,
    )
    return token_id


async def insert_job(
    pool: asyncpg.Pool, status: str, finished_at: datetime | None, result: Path | None = None
) -> uuid.UUID:
    job_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO jobs (id, kind, owner, status, attempts, processed, failed, result_path, result_media_type,"
        " started_at, finished_at, created_at, updated_at)"
        " VALUES ($1, 'export_users', 'user:purge', $2, 1, 0, 0, $3, $4, $5, $6, $5, now())",
        job_id,
        status,
        None if result is None else str(result),
        None if result is None else "text/csv",
        (finished_at or datetime.now(UTC)) - HOUR,
        finished_at,
    )
    return job_id


def result_file(settings: Settings, name: str) -> Path:
    path = settings.data_path / "jobs" / f"{name}-{uuid.uuid4()}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("email\nada@example.com\n")
    return path


async def ids(pool: asyncpg.Pool, statement: str) -> set[object]:
    return {record[0] for record in await pool.fetch(statement)}


async def test_expired_rows_are_deleted_and_live_ones_kept(
    settings: Settings, pool: asyncpg.Pool, database_url: str
) -> None:
    now = datetime.now(UTC)
    ttl = timedelta(seconds=settings.job_result_ttl)
    user = await insert_user(database_url, None, "purged")

    expired_key = await insert_idempotency_key(pool, now - timedelta(seconds=1))
    live_key = await insert_idempotency_key(pool, now + HOUR)
    expired_token = await insert_refresh_token(pool, user.id, now - timedelta(seconds=1))
    live_token = await insert_refresh_token(pool, user.id, now + HOUR)

    old_export = result_file(settings, "old")
    recent_export = result_file(settings, "recent")
    old_jobs = {
        await insert_job(pool, "complete", now - ttl - HOUR, old_export),
        await insert_job(pool, "failed", now - ttl - HOUR),
        await insert_job(pool, "aborted", now - ttl - timedelta(seconds=5)),
    }
    kept_jobs = {
        await insert_job(pool, "complete", now - ttl + HOUR, recent_export),
        await insert_job(pool, "failed", now - timedelta(seconds=5)),
        await insert_job(pool, "active", None),
        await insert_job(pool, "queued", None),
    }
    await pool.execute("UPDATE jobs SET created_at = $1 WHERE finished_at IS NULL", now - ttl - 5 * HOUR)

    deleted = await purge_expired({"settings": settings, "pool": pool})  # type: ignore[typeddict-item]

    assert deleted["idempotency_keys"] == 1
    assert deleted["refresh_tokens"] == 1
    assert deleted["jobs"] == len(old_jobs)
    assert await ids(pool, "SELECT key_hash FROM idempotency_keys") == {live_key}
    assert expired_key != live_key
    assert await ids(pool, "SELECT id FROM refresh_tokens") == {live_token}
    assert expired_token != live_token
    assert await ids(pool, "SELECT id FROM jobs") == kept_jobs, "unfinished jobs are kept however old"
    assert not old_export.exists(), "an old job's result file goes with it"
    assert recent_export.read_text() == "email\nada@example.com\n"


async def test_a_purge_with_nothing_expired_deletes_nothing(settings: Settings, pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    live_key = await insert_idempotency_key(pool, now + HOUR)
    job_id = await insert_job(pool, "complete", now)

    deleted = await purge_expired({"settings": settings, "pool": pool})  # type: ignore[typeddict-item]

    assert set(deleted.values()) == {0}, deleted
    assert await ids(pool, "SELECT key_hash FROM idempotency_keys") == {live_key}
    assert await ids(pool, "SELECT id FROM jobs") == {job_id}


async def test_an_old_jobs_missing_result_file_does_not_stop_the_purge(settings: Settings, pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    gone = settings.data_path / "jobs" / f"gone-{uuid.uuid4()}.csv"
    await insert_job(pool, "complete", now - timedelta(seconds=settings.job_result_ttl) - HOUR, gone)

    deleted = await purge_expired({"settings": settings, "pool": pool})  # type: ignore[typeddict-item]

    assert deleted["jobs"] == 1
    assert await ids(pool, "SELECT id FROM jobs") == set()
