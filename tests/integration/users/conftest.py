"""Fixtures of the bulk import and export tests: an app and an in-process worker on each queue backend.

Tests that take `bulk_client` run twice: on SAQ's PostgreSQL queue in the session database, and on Redis
(TEST_REDIS_URL). Both use a queue name of their own, so a shared Redis (or another test's worker) never
sees these jobs; the name's Redis keys and PostgreSQL rows are deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from saq import Queue

from accounts import worker
from accounts.app import create_app
from accounts.config import Settings

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IMPORT_MAX_BYTES = 2 << 20

Client = AsyncTestClient[Litestar]


@pytest.fixture(scope="session", params=["postgres", "redis"])
def bulk_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def bulk_settings(settings: Settings, bulk_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return msgspec.structs.replace(
        settings,
        redis_url=REDIS_URL if bulk_backend == "redis" else None,
        data_dir=str(tmp_path_factory.mktemp(f"bulk-{bulk_backend}")),
        import_max_bytes=IMPORT_MAX_BYTES,
        worker_concurrency=2,
        shutdown_timeout=1,
    )


@pytest.fixture(scope="session")
async def bulk_queue_name(bulk_settings: Settings, database_url: str) -> AsyncIterator[str]:
    name = f"accounts-bulk-{uuid.uuid4().hex[:10]}"
    yield name
    if bulk_settings.redis_url:
        redis = Redis.from_url(bulk_settings.redis_url)
        try:
            for pattern in (f"saq:{name}:*", f"saq:job:{name}:*", f"saq:{name}*"):
                keys = [key async for key in redis.scan_iter(match=pattern, count=500)]
                if keys:
                    await redis.delete(*keys)
        finally:
            await redis.aclose()
    else:
        connection = await asyncpg.connect(database_url)
        try:
            if await connection.fetchval("SELECT to_regclass('saq_jobs')") is not None:
                await connection.execute("DELETE FROM saq_jobs WHERE queue = $1", name)
        finally:
            await connection.close()


def named_queue(settings: Settings, name: str) -> Queue:
    """`accounts.worker.make_queue`, under this session's queue name."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker, "QUEUE_NAME", name)
        return worker.make_queue(settings, pool_size=4)


@pytest.fixture(scope="session")
async def bulk_worker(bulk_settings: Settings, bulk_queue_name: str) -> AsyncIterator[None]:
    """A worker on the tests' event loop, as `accounts worker` runs it (without its signal handlers)."""
    queue = named_queue(bulk_settings, bulk_queue_name)
    await queue.connect()
    running_worker = worker.make_worker(bulk_settings, queue)
    running_worker.SIGNALS = []
    running = asyncio.create_task(running_worker.start())
    yield
    running.cancel()  # Worker.start() takes this as its stop signal
    await running
    await queue.disconnect()


@pytest.fixture(scope="session")
async def bulk_client(bulk_settings: Settings, bulk_queue_name: str, bulk_worker: None) -> AsyncIterator[Client]:
    """A client of an app whose queue is on `bulk_backend`, with a worker running."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker, "QUEUE_NAME", bulk_queue_name)
        client = AsyncTestClient(create_app(bulk_settings), raise_server_exceptions=False)
        await client.__aenter__()  # the app makes its queue at start-up, under the patched name
    try:
        yield client
    finally:
        await client.__aexit__(None, None, None)


def uploads(settings: Settings) -> list[Path]:
    """The import files waiting for (or left by) a job."""
    folder = settings.data_path / "imports"
    return sorted(folder.iterdir()) if folder.exists() else []
