"""The SAQ queue and the worker that runs every domain's tasks and the scheduled clean-ups.

The queue lives on Redis when REDIS_URL is set, otherwise on the app's own PostgreSQL (SAQ's Postgres
queue, in its own `saq_*` tables), so the embedded database needs nothing more. Run a worker with
`accounts worker` (`make worker`); on SIGTERM it lets running jobs finish for SHUTDOWN_TIMEOUT
seconds, then cancels them, and SAQ puts them back on the queue. A job whose worker was killed is
swept back onto the queue once its heartbeat (or timeout) has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog
from saq import Queue, Worker
from saq.job import CronJob, Status
from saq.queue.postgres import PostgresQueue
from saq.types import PartialTimersDict

from accounts.config import Settings
from accounts.jobs.services import JobStore, WorkerContext, tracked_id
from accounts.logging import configure_logging
from accounts.system.jobs import purge_expired

QUEUE_NAME = "accounts"

# Every task by the name it is enqueued under; a domain adds its tasks here.
TASKS: dict[str, Any] = {
    "purge_expired": purge_expired,
}
CRON_JOBS = [CronJob(purge_expired, cron="*/10 * * * *", timeout=300, retries=1)]

_RECORDED = {Status.COMPLETE: "complete", Status.FAILED: "failed", Status.QUEUED: "queued"}

log = structlog.get_logger("accounts.worker")


def make_queue(settings: Settings, *, pool_size: int = 2) -> Queue:
    """The queue on Redis (REDIS_URL) or on the app's PostgreSQL; `pool_size` bounds its connections."""
    if settings.redis_url:
        return Queue.from_url(settings.redis_url, name=QUEUE_NAME)
    return PostgresQueue.from_url(
        settings.asyncpg_database_url or "", name=QUEUE_NAME, min_size=1, max_size=max(pool_size, 2)
    )


def make_worker(settings: Settings, queue: Queue) -> Worker[WorkerContext]:
    async def startup(ctx: WorkerContext) -> None:
        pool = await asyncpg.create_pool(
            settings.asyncpg_database_url, min_size=1, max_size=settings.worker_concurrency + 1
        )
        ctx["settings"] = settings
        ctx["pool"] = pool
        ctx["jobs"] = JobStore(pool)

    async def shutdown(ctx: WorkerContext) -> None:
        if (pool := ctx.get("pool")) is not None:
            await pool.close()

    async def before_process(ctx: WorkerContext) -> None:
        job = ctx["job"]
        structlog.contextvars.bind_contextvars(job_id=job.key, task=job.function, attempt=job.attempts)
        if (job_id := tracked_id(ctx)) is not None:
            await ctx["jobs"].started(job_id, job.attempts)

    async def after_process(ctx: WorkerContext) -> None:
        job = ctx["job"]
        try:
            if (job_id := tracked_id(ctx)) is not None and job.status in _RECORDED:
                await ctx["jobs"].ended(job_id, _RECORDED[job.status], _summary(job.error))
            if job.status in (Status.FAILED, Status.QUEUED) and job.error:
                log.warning("job attempt failed", status=job.status.value, error=_summary(job.error))
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "task", "attempt")

    return Worker(
        queue,
        functions=list(TASKS.items()),
        cron_jobs=CRON_JOBS,
        concurrency=settings.worker_concurrency,
        startup=startup,
        shutdown=shutdown,
        before_process=before_process,
        after_process=after_process,
        shutdown_grace_period_s=settings.shutdown_timeout,
        # SAQ's defaults, but a sweep every 10 s (not 60): a killed worker's jobs go back on the queue sooner.
        timers=PartialTimersDict(schedule=1, worker_info=10, sweep=10, abort=1),
    )


def _summary(error: str | None) -> str | None:
    """The last line of a traceback (`ValueError: ...`): what went wrong, without the internals."""
    if not error:
        return None
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else None


@asynccontextmanager
async def worker_in_process(settings: Settings) -> AsyncIterator[None]:
    """A worker inside an API process, for development (WORKER_IN_PROCESS), stopped when the block ends."""
    queue = make_queue(settings, pool_size=settings.worker_concurrency + 2)
    await queue.connect()
    worker = make_worker(settings, queue)
    worker.SIGNALS = []  # the server owns SIGTERM and SIGINT
    running = asyncio.create_task(worker.start())
    try:
        yield
    finally:
        running.cancel()  # Worker.start() takes this as its stop signal and shuts down gracefully
        await running
        await queue.disconnect()


async def run_worker(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT."""
    configure_logging(settings)
    queue = make_queue(settings, pool_size=settings.worker_concurrency + 2)
    await queue.connect()
    try:
        await make_worker(settings, queue).start()
    finally:
        await queue.disconnect()


def main(settings: Settings) -> None:
    asyncio.run(run_worker(settings))
