"""Fixtures of the job tests: both queue backends, an app on each, workers in-process and in child processes.

Every test that takes `backend` runs twice: on SAQ's PostgreSQL queue in the session database, and on Redis
(REDIS_URL below). The session's queue has a name of its own (`accounts.worker.QUEUE_NAME` is patched, and
child workers get it as TEST_QUEUE_NAME), so a shared Redis is left as it was found: the queue is emptied
after each test and its keys deleted at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from saq import Job

from accounts import worker
from accounts.app import create_app
from accounts.auth.credentials import new_api_key, secret_hash
from accounts.config import Settings
from accounts.core.passwords import hash_password
from accounts.jobs.services import Jobs, JobStore
from tests.integration.auth.support import PASSWORD, Account, LoggedIn, insert_user, log_in
from tests.integration.jobs.tasks import TEST_TASKS

ROOT = Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SHUTDOWN_TIMEOUT = 1
"""Seconds a stopping worker waits for running jobs (SAQ waits this long even when idle)."""

Client = AsyncTestClient[Litestar]


# --- the queue ----------------------------------------------------------------------------------


_SESSION_QUEUE_NAME = pytest.StashKey[str]()


@pytest.fixture(scope="session")
async def queue_name(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """This session's queue name, in force for every queue `accounts.worker.make_queue` makes. A test module
    elsewhere that imports these fixtures has copies of them of its own: every copy patches the same name."""
    name = request.config.stash.setdefault(_SESSION_QUEUE_NAME, f"accounts-test-{uuid.uuid4().hex[:10]}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker, "QUEUE_NAME", name)
        yield name
    await delete_redis_keys(name)


async def delete_redis_keys(name: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        for pattern in (f"saq:{name}:*", f"saq:job:{name}:*"):
            keys = [key async for key in redis.scan_iter(match=pattern, count=500)]
            if keys:
                await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture(scope="session", params=["postgres", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def job_settings(settings: Settings, backend: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session settings on `backend`, with a small worker and a short shutdown grace period."""
    return msgspec.structs.replace(
        settings,
        redis_url=REDIS_URL if backend == "redis" else None,
        worker_concurrency=4,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        data_dir=str(tmp_path_factory.mktemp(f"jobs-{backend}")),
    )


@pytest.fixture(scope="session")
async def jobs_client(job_settings: Settings, queue_name: str) -> AsyncIterator[Client]:
    """A client of an app whose queue is on `backend` (the session `client` is always on PostgreSQL)."""
    async with AsyncTestClient(create_app(job_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
async def jobs(job_settings: Settings, queue_name: str) -> AsyncIterator[Jobs]:
    """`Jobs` on `backend`, made as the app makes it, on the tests' event loop (the app runs on another)."""
    pool = await asyncpg.create_pool(job_settings.asyncpg_database_url, min_size=1, max_size=4)
    queue = worker.make_queue(job_settings)
    try:
        yield Jobs(JobStore(pool), queue)
    finally:
        await queue.disconnect()
        await pool.close()


@pytest.fixture(autouse=True)
def test_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test tasks, known to every worker made during the test."""
    for name, function in TEST_TASKS.items():
        monkeypatch.setitem(worker.TASKS, name, function)


@pytest.fixture(autouse=True)
async def empty_queue(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a test on a backend, no job of it is left on the queue for a later test's worker to run."""
    yield
    if "job_settings" not in request.fixturenames:
        return
    name = request.getfixturevalue("queue_name")
    if request.getfixturevalue("backend") == "redis":
        await delete_redis_keys(name)
        return
    connection = await asyncpg.connect(request.getfixturevalue("database_url"))
    try:
        if await connection.fetchval("SELECT to_regclass('saq_jobs')") is not None:
            await connection.execute("DELETE FROM saq_jobs WHERE queue = $1", name)
    finally:
        await connection.close()


# --- workers ------------------------------------------------------------------------------------


class InProcessWorker:
    """The worker `WORKER_IN_PROCESS` runs (accounts.worker.worker_in_process), on the test's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: AsyncExitStack | None = None

    async def start(self) -> None:
        assert self._running is None
        self._running = AsyncExitStack()
        await self._running.enter_async_context(worker.worker_in_process(self.settings))

    async def stop(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            await running.aclose()


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


class WorkerProcess:
    """`accounts.worker.main` in a child process (tests/integration/jobs/worker_process.py), stdout to `log`."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.jobs.worker_process"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def signal(self, signum: signal.Signals) -> float:
        """Send `signum`; returns the monotonic time it was sent."""
        self.process.send_signal(signum)
        return time.monotonic()

    async def exit_code(self, within: float) -> int:
        """Wait for the process to exit; fails (and kills it) after `within` seconds."""
        try:
            return await asyncio.to_thread(self.process.wait, within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the worker did not exit within {within} s:\n{self.output}")

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


SpawnWorker = Callable[..., WorkerProcess]


@pytest.fixture
def spawn_worker(job_settings: Settings, queue_name: str, tmp_path: Path) -> Iterator[SpawnWorker]:
    """`spawn_worker(SHUTDOWN_TIMEOUT="3")`: a new worker process on `backend`; all are killed after the test."""
    started: list[WorkerProcess] = []
    inherited = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DATA_DIR"}}

    def spawn(**overrides: str) -> WorkerProcess:
        env = inherited | {
            "DATABASE_URL": job_settings.database_url or "",
            "DATA_DIR": job_settings.data_dir,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "WORKER_CONCURRENCY": "2",
            "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
            "TEST_QUEUE_NAME": queue_name,
        }
        if job_settings.redis_url:
            env["REDIS_URL"] = job_settings.redis_url
        process = WorkerProcess(env | overrides, tmp_path / f"worker-{len(started) + 1}.log")
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait(10)


# --- reading jobs -------------------------------------------------------------------------------


async def wait_for(
    jobs: Jobs, job_id: uuid.UUID, check: Callable[[asyncpg.Record], bool], *, within: float = 15.0
) -> asyncpg.Record:
    """Poll the `jobs` row until `check` holds; fails with the last row seen after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        record = await jobs.store.get(job_id)
        if check(record):
            return record
        assert time.monotonic() < deadline, f"after {within} s: {dict(record)}"
        await asyncio.sleep(0.05)


async def wait_for_status(jobs: Jobs, job_id: uuid.UUID, status: str, *, within: float = 15.0) -> asyncpg.Record:
    return await wait_for(jobs, job_id, lambda record: record["status"] == status, within=within)


async def saq_status(jobs: Jobs, job_id: uuid.UUID) -> str | None:
    """What SAQ itself says of the job (None once it has forgotten it)."""
    job = await jobs.queue.job(str(job_id))
    return None if job is None else job.status.value


async def wait_for_saq_status(jobs: Jobs, key: str, status: str, *, within: float = 15.0) -> Job:
    """Poll SAQ's own record of the job under `key` until its status is `status`; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while (job := await jobs.queue.job(key)) is None or job.status.value != status:
        assert time.monotonic() < deadline, f"after {within} s: {job}"
        await asyncio.sleep(0.05)
    return job


# --- callers ------------------------------------------------------------------------------------


MakeCaller = Callable[..., Awaitable[LoggedIn]]


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


async def insert_api_key_with_id(database_url: str, scopes: list[str]) -> tuple[str, str]:
    """A new API key written with SQL; returns its owner identity (`key:<id>`) and its secret."""
    prefix, key = new_api_key()
    key_id = uuid.uuid4()
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, created_at, updated_at)"
            " VALUES ($1, 'job tests', $2, $3, $4, now(), now())",
            key_id,
            prefix,
            secret_hash(key),
            scopes,
        )
    finally:
        await connection.close()
    return f"key:{key_id}", key


def user_owner(caller: LoggedIn) -> str:
    return f"user:{caller.id}"
