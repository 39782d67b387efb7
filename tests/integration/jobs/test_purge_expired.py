"""`purge_expired` (accounts.system.jobs), the scheduled clean-up, called as the worker calls it: what has
expired is deleted, what is still live is kept, and job result files go once older than JOB_RESULT_TTL (SAQ
forgets the jobs themselves as long after they finish).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
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
    token_id, session_id = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO sessions (id, user_id, amr, last_used_at, created_at, updated_at)"
        " VALUES ($1, $2, '{pwd}', now(), now(), now())",
        session_id,
        uuid.UUID(user_id),
    )
    await pool.execute(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, now(), now())",
        token_id,
        uuid.UUID(user_id),
        session_id,
        os.urandom(32),
        expires_at,
    )
    return token_id


def result_file(settings: Settings, name: str, *, age: timedelta) -> Path:
    """A file in DATA_DIR/jobs last written `age` ago, as a job's result file."""
    path = settings.data_path / "jobs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("email\nada@example.com\n")
    written = time.time() - age.total_seconds()
    os.utime(path, (written, written))
    return path


async def ids(pool: asyncpg.Pool, statement: str) -> set[object]:
    return {record[0] for record in await pool.fetch(statement)}


async def test_expired_rows_and_old_result_files_are_deleted_and_live_ones_kept(
    settings: Settings, pool: asyncpg.Pool, database_url: str
) -> None:
    now = datetime.now(UTC)
    ttl = timedelta(seconds=settings.job_result_ttl)
    user = await insert_user(database_url, None, "purged")

    expired_key = await insert_idempotency_key(pool, now - timedelta(seconds=1))
    live_key = await insert_idempotency_key(pool, now + HOUR)
    expired_token = await insert_refresh_token(pool, user.id, now - timedelta(seconds=1))
    live_token = await insert_refresh_token(pool, user.id, now + HOUR)
    revocations = [("expired-jti", now - timedelta(seconds=1)), ("live-jti", now + HOUR)]
    await pool.executemany("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)", revocations)

    old_files = [
        result_file(settings, f"{uuid.uuid4()}.csv", age=ttl + HOUR),
        result_file(settings, f"{uuid.uuid4()}.errors.ndjson", age=ttl + timedelta(seconds=5)),
        result_file(settings, f".{uuid.uuid4()}.ndjson.partial", age=ttl + HOUR),  # a killed worker's
    ]
    kept_files = [
        result_file(settings, f"{uuid.uuid4()}.csv", age=ttl - HOUR),
        result_file(settings, f"{uuid.uuid4()}.ndjson", age=timedelta(seconds=5)),
    ]

    deleted = await purge_expired({"settings": settings, "pool": pool})  # type: ignore[typeddict-item]

    assert deleted["idempotency_keys"] == 1
    assert deleted["refresh_tokens"] == 1
    assert deleted["revoked_tokens"] == 1
    assert deleted["job_result_files"] == len(old_files)
    assert await ids(pool, "SELECT key_hash FROM idempotency_keys") == {live_key}
    assert expired_key != live_key
    assert await ids(pool, "SELECT id FROM refresh_tokens") == {live_token}
    assert expired_token != live_token
    assert await ids(pool, "SELECT jti FROM revoked_tokens") == {"live-jti"}
    assert [path for path in old_files if path.exists()] == [], "result files older than JOB_RESULT_TTL go"
    assert all(path.read_text() == "email\nada@example.com\n" for path in kept_files)


async def test_a_purge_with_nothing_expired_deletes_nothing(settings: Settings, pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    live_key = await insert_idempotency_key(pool, now + HOUR)
    recent = result_file(settings, f"{uuid.uuid4()}.csv", age=HOUR)

    deleted = await purge_expired({"settings": settings, "pool": pool})  # type: ignore[typeddict-item]

    assert set(deleted.values()) == {0}, deleted
    assert await ids(pool, "SELECT key_hash FROM idempotency_keys") == {live_key}
    assert recent.exists()


async def test_a_purge_without_a_results_folder_deletes_no_file(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    elsewhere = msgspec.structs.replace(settings, data_dir=str(tmp_path / "never-used"))

    deleted = await purge_expired({"settings": elsewhere, "pool": pool})  # type: ignore[typeddict-item]

    assert deleted["job_result_files"] == 0
    assert not (tmp_path / "never-used").exists()


async def test_sessions_challenges_and_delivery_logs_nothing_can_use_are_deleted(
    settings: Settings, pool: asyncpg.Pool, database_url: str
) -> None:
    user = uuid.UUID((await insert_user(database_url, None, "sessions")).id)
    idle, with_token, recent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for session_id, last_used in ((idle, timedelta(days=2)), (with_token, timedelta(days=2)), (recent, HOUR)):
        await pool.execute(
            "INSERT INTO sessions (id, user_id, amr, last_used_at, created_at, updated_at)"
            " VALUES ($1, $2, '{pwd}', now() - $3::interval, now(), now())",
            session_id,
            user,
            last_used,
        )
    await pool.execute(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, now() + interval '1 day', now(), now())",
        uuid.uuid4(),
        user,
        with_token,
        os.urandom(32),
    )
    await pool.execute(
        "INSERT INTO mfa_challenges (id, user_id, token_hash, amr, expires_at, created_at, updated_at)"
        " VALUES ($1, $2, $3, '{pwd}', now() - interval '1 second', now(), now())",
        uuid.uuid4(),
        user,
        os.urandom(32),
    )
    webhook = uuid.uuid4()
    await pool.execute(
        "INSERT INTO webhooks (id, url, event_types, description, secret, enabled, consecutive_failures, created_at,"
        " updated_at) VALUES ($1, 'https://93.184.215.14/hook', ARRAY['*'], '', $2, true, 0, now(), now())",
        webhook,
        b"\3" * 32,
    )
    old_done, old_pending, recent_done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for delivery, status, age in (
        (old_done, "succeeded", timedelta(days=31)),
        (old_pending, "pending", timedelta(days=31)),
        (recent_done, "failed", timedelta(days=1)),
    ):
        await pool.execute(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, subject, payload, status, attempts,"
            " created_at, updated_at) VALUES ($1, $2, $3, 'user.created', 'user:x', '{}', $4, 1, now() - $5::interval,"
            " now() - $5::interval)",
            delivery,
            webhook,
            uuid.uuid4(),
            status,
            age,
        )

    deleted = await purge_expired({"settings": settings, "pool": pool})  # type: ignore[typeddict-item]

    assert (deleted["sessions"], deleted["mfa_challenges"], deleted["webhook_deliveries"]) == (1, 1, 1)
    assert await ids(pool, "SELECT id FROM sessions") == {with_token, recent}
    assert await ids(pool, "SELECT id FROM webhook_deliveries") == {old_pending, recent_done}
