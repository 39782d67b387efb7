"""Fixtures of the bulk import and export tests: an app and an in-process worker on each queue backend.

Tests that take `bulk_client` run twice: on SAQ's PostgreSQL queue in the session database, and on Redis
(TEST_REDIS_URL). Both use a queue name of their own (tests/integration/jobs/support.py), so a shared Redis (or
another test's worker) never sees these jobs; the queue's jobs are deleted at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from accounts import worker
from accounts.app import create_app
from accounts.config import Settings
from accounts.jobs.services import Jobs
from tests.integration.jobs.support import BACKENDS, connected_jobs, on_backend
from tests.integration.users.bulk import IMPORT_MAX_BYTES, Client


@pytest.fixture(scope="session", params=BACKENDS)
def bulk_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def bulk_settings(settings: Settings, bulk_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp(f"bulk-{bulk_backend}")
    return on_backend(
        settings, bulk_backend, data_dir, import_max_bytes=IMPORT_MAX_BYTES, worker_concurrency=2, shutdown_timeout=1
    )


@pytest.fixture(scope="session")
async def bulk_jobs(bulk_settings: Settings) -> AsyncIterator[Jobs]:
    """`Jobs` on the bulk tests' queue, on the tests' event loop: to look at the queue (the app has its own)."""
    async with connected_jobs(bulk_settings) as jobs:
        yield jobs


@pytest.fixture(scope="session")
async def bulk_worker(bulk_settings: Settings, bulk_jobs: Jobs) -> AsyncIterator[None]:
    """A worker on the tests' event loop, as `accounts worker` runs it (without its signal handlers)."""
    queue = worker.make_queue(bulk_settings, pool_size=4)
    await queue.connect()
    running_worker = worker.make_worker(bulk_settings, queue)
    running_worker.SIGNALS = []
    running = asyncio.create_task(running_worker.start())
    yield
    running.cancel()  # Worker.start() takes this as its stop signal
    await running
    await queue.disconnect()


@pytest.fixture(scope="session")
async def bulk_client(bulk_settings: Settings, bulk_worker: None) -> AsyncIterator[Client]:
    """A client of an app whose queue is on `bulk_backend`, with a worker running."""
    async with AsyncTestClient(create_app(bulk_settings), raise_server_exceptions=False) as client:
        yield client
