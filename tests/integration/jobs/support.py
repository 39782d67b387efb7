"""What tests of jobs share, fixtures aside: a queue of their own on either backend, `Jobs` on it, workers in the
test's process and in child processes, waiting for a job, and callers. The job fixtures
(tests/integration/jobs/conftest.py), the bulk fixtures (tests/integration/users/conftest.py) and the fault tests
(tests/faults/) are made of these.

Each queue has a name of its own (QUEUE_NAME, the `queue_name` setting), so a shared Redis, or another test's
worker, never sees its jobs; `delete_queue` leaves the backend as it was found.
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
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from saq import Job

from accounts.config import Settings
from accounts.jobs.schemas import JobRead
from accounts.jobs.services import Jobs
from accounts.worker import make_queue, worker_in_process
from tests.integration.auth.support import LoggedIn

ROOT = Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ("postgres", "redis")
SHUTDOWN_TIMEOUT = 1
"""Seconds a stopping worker waits for running jobs (SAQ waits this long even when idle)."""

Client = AsyncTestClient[Litestar]


# --- the queue ----------------------------------------------------------------------------------


def on_backend(settings: Settings, backend: str, data_dir: Path, **changes: object) -> Settings:
    """`settings` with the queue on `backend` under a name of its own, result files in `data_dir`."""
    return msgspec.structs.replace(
        settings,
        redis_url=REDIS_URL if backend == "redis" else None,
        queue_name=f"accounts-test-{uuid.uuid4().hex[:10]}",
        data_dir=str(data_dir),
        **changes,
    )


async def delete_queue(settings: Settings) -> None:
    """Every job of the queue of `settings`, gone from its backend (Redis keys or `saq_jobs` rows)."""
    name = settings.queue_name
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url)
        try:
            for pattern in (f"saq:{name}:*", f"saq:job:{name}:*"):
                keys = [key async for key in redis.scan_iter(match=pattern, count=500)]
                if keys:
                    await redis.delete(*keys)
        finally:
            await redis.aclose()
        return
    connection = await asyncpg.connect(settings.asyncpg_direct_url)
    try:
        if await connection.fetchval("SELECT to_regclass('saq_jobs')") is not None:
            await connection.execute("DELETE FROM saq_jobs WHERE queue = $1", name)
    finally:
        await connection.close()


@asynccontextmanager
async def connected_jobs(settings: Settings) -> AsyncIterator[Jobs]:
    """`Jobs` on the queue of `settings`, made as the app makes it; the queue's jobs are deleted at the end."""
    jobs = Jobs(make_queue(settings, pool_size=4), settings.job_result_ttl)
    try:
        yield jobs
    finally:
        await jobs.queue.disconnect()
        await delete_queue(settings)


async def started_jobs(jobs: Jobs) -> set[str]:
    """The ids of the jobs on the queue that callers started (`Jobs.submit`), whatever their status."""
    await jobs.connect()
    return {job.key async for job in jobs.queue.iter_jobs() if "owner" in job.meta}


# --- reading jobs -------------------------------------------------------------------------------


async def wait_for(jobs: Jobs, job_id: uuid.UUID, check: Callable[[JobRead], bool], *, within: float = 15.0) -> JobRead:
    """Poll the job (as `GET /api/v1/jobs/{id}` reads it) until `check` holds; fails with the last seen after
    `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        job = await jobs.read(job_id)
        if check(job):
            return job
        assert time.monotonic() < deadline, f"after {within} s: {job}"
        await asyncio.sleep(0.05)


async def wait_for_status(jobs: Jobs, job_id: uuid.UUID, status: str, *, within: float = 15.0) -> JobRead:
    return await wait_for(jobs, job_id, lambda job: job.status == status, within=within)


async def saq_job(jobs: Jobs, key: uuid.UUID | str) -> Job:
    """SAQ's own record of the job under `key`, as it stands."""
    job = await jobs.queue.job(str(key))
    assert job is not None, f"SAQ has no job {key}"
    return job


async def wait_for_saq_status(jobs: Jobs, key: uuid.UUID | str, status: str, *, within: float = 15.0) -> Job:
    """Poll SAQ's record of the job under `key` until its own status is `status`; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while (job := await jobs.queue.job(str(key))) is None or job.status.value != status:
        assert time.monotonic() < deadline, f"after {within} s: {job}"
        await asyncio.sleep(0.05)
    return job


# --- workers in the test's process --------------------------------------------------------------


class InProcessWorker:
    """The worker `WORKER_IN_PROCESS` runs (accounts.worker.worker_in_process), on the test's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: AsyncExitStack | None = None

    async def start(self) -> None:
        assert self._running is None
        self._running = AsyncExitStack()
        await self._running.enter_async_context(worker_in_process(self.settings))

    async def stop(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            await running.aclose()


# --- workers in child processes -----------------------------------------------------------------


class WorkerProcess:
    """`accounts.worker.main` in a child process (tests/integration/jobs/worker_process.py, which adds the test
    tasks), with `env` as its whole environment and its output in `log`."""

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

_SETTINGS_FROM_TESTS = {"DATABASE_URL", "REDIS_URL", "DATA_DIR", "QUEUE_NAME"}


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker process on the queue, database and data folder of `settings`."""
    env = {name: value for name, value in os.environ.items() if name not in _SETTINGS_FROM_TESTS}
    env |= {
        "DATABASE_URL": settings.database_url or "",
        "DATA_DIR": settings.data_dir,
        "QUEUE_NAME": settings.queue_name,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "WORKER_CONCURRENCY": "2",
        "WORKER_METRICS_PORT": "0",  # no port to collide with another worker's
        "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "JOB_SWEEP_INTERVAL": "1",  # a killed worker's job is taken back within a second of its heartbeat lapsing
    }
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    return env


@contextmanager
def worker_processes(settings: Settings, folder: Path) -> Iterator[SpawnWorker]:
    """`spawn(SHUTDOWN_TIMEOUT="3")` starts a worker process on the queue of `settings`, logging to `folder`;
    every one still running is killed when the block ends."""
    started: list[WorkerProcess] = []

    def spawn(**overrides: str) -> WorkerProcess:
        process = WorkerProcess(worker_env(settings) | overrides, folder / f"worker-{len(started) + 1}.log")
        started.append(process)
        return process

    try:
        yield spawn
    finally:
        for process in started:
            if process.process.poll() is None:
                process.process.kill()
                process.process.wait(10)


# --- callers ------------------------------------------------------------------------------------


MakeCaller = Callable[..., Awaitable[LoggedIn]]


def user_owner(caller: LoggedIn) -> str:
    return f"user:{caller.id}"
