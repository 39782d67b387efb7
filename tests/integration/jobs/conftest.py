"""Fixtures of the job tests: both queue backends, an app on each, workers in-process and in child processes.

Every test that takes `backend` runs twice: on SAQ's PostgreSQL queue in the session database, and on Redis
(TEST_REDIS_URL). Each backend's queue has a name of its own (the `queue_name` setting, which child workers get
as QUEUE_NAME), so a shared Redis is left as it was found: the queue is emptied after each test and at the end
of the session. The parts these fixtures are made of are in tests/integration/jobs/support.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from accounts import worker
from accounts.app import create_app
from accounts.config import Settings
from accounts.core.passwords import hash_password
from accounts.jobs.services import Jobs
from tests.integration.auth.support import PASSWORD, Account, LoggedIn, insert_user, log_in
from tests.integration.jobs.support import (
    BACKENDS,
    SHUTDOWN_TIMEOUT,
    Client,
    InProcessWorker,
    MakeCaller,
    SpawnWorker,
    connected_jobs,
    delete_queue,
    on_backend,
    worker_processes,
)
from tests.integration.jobs.tasks import TEST_TASKS

# --- the queue ----------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def job_settings(settings: Settings, backend: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session settings with the queue on `backend`, a small worker and a short shutdown grace period."""
    data_dir = tmp_path_factory.mktemp(f"jobs-{backend}")
    return on_backend(settings, backend, data_dir, worker_concurrency=4, shutdown_timeout=SHUTDOWN_TIMEOUT)


@pytest.fixture(scope="session")
async def jobs_client(job_settings: Settings) -> AsyncIterator[Client]:
    """A client of an app whose queue is on `backend` (the session `client` is always on PostgreSQL)."""
    async with AsyncTestClient(create_app(job_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
async def jobs(job_settings: Settings) -> AsyncIterator[Jobs]:
    """`Jobs` on `backend`, made as the app makes it, on the tests' event loop (the app runs on another)."""
    async with connected_jobs(job_settings) as jobs:
        yield jobs


@pytest.fixture(autouse=True)
def test_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test tasks, known to every worker made during the test."""
    for name, function in TEST_TASKS.items():
        monkeypatch.setitem(worker.TASKS, name, function)


@pytest.fixture(autouse=True)
async def empty_queue(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a test on a backend, no job of it is left on the queue for a later test's worker to run."""
    yield
    if "job_settings" in request.fixturenames:
        await delete_queue(request.getfixturevalue("job_settings"))


# --- workers ------------------------------------------------------------------------------------


@pytest.fixture
async def in_process(job_settings: Settings) -> AsyncIterator[InProcessWorker]:
    """An in-process worker, not started yet; stopped at the end of the test."""
    control = InProcessWorker(job_settings)
    yield control
    await control.stop()


@pytest.fixture
async def running_worker(in_process: InProcessWorker) -> InProcessWorker:
    await in_process.start()
    return in_process


@pytest.fixture
def spawn_worker(job_settings: Settings, tmp_path: Path) -> Iterator[SpawnWorker]:
    """`spawn_worker(SHUTDOWN_TIMEOUT="3")`: a new worker process on `backend`; all are killed after the test."""
    with worker_processes(job_settings, tmp_path) as spawn:
        yield spawn


# --- callers ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def password_hash() -> str:
    return await hash_password(PASSWORD)


@pytest.fixture
def make_caller(jobs_client: Client, database_url: str, password_hash: str) -> MakeCaller:
    """`await make_caller("alice", admin=False)`: a user written with SQL and logged in through the app."""

    async def make(username: str, *, admin: bool = False) -> LoggedIn:
        account: Account = await insert_user(database_url, password_hash, username, admin=admin)
        return await log_in(jobs_client, account)

    return make
