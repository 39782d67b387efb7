"""The SAQ queue and the worker that runs every domain's tasks and the scheduled clean-ups.

The queue lives on Redis when REDIS_URL is set, otherwise on the app's own PostgreSQL (SAQ's Postgres
queue, in its own `saq_*` tables), so the embedded database needs nothing more. Run a worker with
`accounts worker` (`make worker`); on SIGTERM it lets running jobs finish for SHUTDOWN_TIMEOUT
seconds, then cancels them, and SAQ puts them back on the queue. A job whose worker was killed is
swept back onto the queue once its heartbeat (or timeout) has passed; long jobs keep a short heartbeat
fresh while they run, and each run is fenced by an advisory lock (accounts.jobs.services.job_task).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from prometheus_client import Counter, Histogram, start_http_server
from saq import Job, Queue, Worker
from saq.job import CronJob, Status
from saq.types import PartialTimersDict
from saq.utils import now

from accounts.config import Settings
from accounts.core.observability.logging import configure_logging
from accounts.core.observability.tracing import start_tracing
from accounts.events import nats as nats_relay
from accounts.events.services import set_recording
from accounts.jobs.services import WORKER_STOPPED, WorkerContext, end_run, error_line
from accounts.mail.jobs import flush_outbox, send_email
from accounts.system.jobs import purge_expired
from accounts.users.jobs import export_users, import_users
from accounts.webhooks import dispatch as webhook_dispatch
from accounts.webhooks.jobs import deliver_webhook, deliver_webhooks

if TYPE_CHECKING:
    from accounts.core.observability.tracing.spans import Tracing

# Every task by the name it is enqueued under; a domain adds its tasks here.
TASKS: dict[str, Any] = {
    "purge_expired": purge_expired,
    "import_users": import_users,
    "export_users": export_users,
    "send_email": send_email,
    "flush_outbox": flush_outbox,
    "deliver_webhook": deliver_webhook,
    "deliver_webhooks": deliver_webhooks,
}
CRON_JOBS = [
    CronJob(purge_expired, cron="*/10 * * * *", timeout=300, retries=1),
    CronJob(flush_outbox, cron="* * * * *", timeout=60, retries=1),
]

log = structlog.get_logger("accounts.worker")
# One worker process, so prometheus_client's ordinary registry is right here (the API needs more).
JOB_OUTCOMES = Counter("accounts_jobs", "Job attempts by task and how they ended.", ["task", "status"])
JOB_DURATIONS = Histogram(
    "accounts_job_duration_seconds", "Time a job attempt ran.", ["task"], buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800)
)


def make_queue(settings: Settings, *, pool_size: int = 2) -> Queue:
    """The queue on Redis (REDIS_URL) or on the app's PostgreSQL; `pool_size` bounds its connections.
    Only the backend in use is imported: the other's client library would cost every process ~12 MB."""
    if settings.redis_url:
        from accounts.jobs.redis_queue import RedisJobQueue  # noqa: PLC0415

        return RedisJobQueue.from_url(settings.redis_url, name=settings.queue_name, swept_error_message=WORKER_STOPPED)
    from saq.queue.postgres import PostgresQueue  # noqa: PLC0415

    # LISTEN/NOTIFY and advisory locks need a session of their own: never through PgBouncer.
    return PostgresQueue.from_url(
        settings.asyncpg_direct_url or "",
        name=settings.queue_name,
        min_size=1,
        max_size=max(pool_size, 2),
        swept_error_message=WORKER_STOPPED,
    )


def make_worker(settings: Settings, queue: Queue, tracing: Tracing | None = None) -> Worker[WorkerContext]:
    """The worker on `queue`; with `tracing`, each attempt runs in a span and jobs it enqueues carry the trace."""
    if tracing is not None:
        tracing.carry_context(queue)

    relays: list[nats_relay.RunningRelay] = []

    async def startup(ctx: WorkerContext) -> None:
        # A job run's fence is a session advisory lock on its connection: never through PgBouncer.
        pool = await asyncpg.create_pool(
            settings.asyncpg_direct_url, min_size=1, max_size=settings.worker_concurrency + 1
        )
        ctx["settings"] = settings
        ctx["pool"] = pool
        await webhook_dispatch.start(ctx)
        if (running := await nats_relay.start(settings)) is not None:  # NATS_URL set: relay the feed to JetStream
            relays.append(running)

    async def shutdown(ctx: WorkerContext) -> None:
        await webhook_dispatch.stop(ctx)
        for running in relays:
            await running.stop()
        if (pool := ctx.get("pool")) is not None:
            await pool.close()

    async def before_process(ctx: WorkerContext) -> None:
        if tracing is not None:
            tracing.start_job_span(ctx)
        job = ctx["job"]
        structlog.contextvars.bind_contextvars(job_id=job.key, task=job.function, attempt=job.attempts)

    async def after_process(ctx: WorkerContext) -> None:
        job = ctx["job"]
        try:
            await end_run(ctx)  # only now that SAQ has recorded how the attempt ended (see job_task)
        finally:
            _observe(job)
            structlog.contextvars.unbind_contextvars("job_id", "task", "attempt")
            if tracing is not None:  # last, so the lines above carry the attempt's trace id
                tracing.end_job_span(ctx)

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
        dequeue_timeout=1.0,  # idle loops wake each second, so a stopping worker need not wait out the grace period
        # SAQ's defaults, but a sweep every JOB_SWEEP_INTERVAL s (not 60): a killed worker's jobs go back on the
        # queue sooner. (On Redis the sweep's lock lasts as long as this interval: SAQ passes it as `sweep(lock=...)`.)
        timers=PartialTimersDict(schedule=1, worker_info=10, sweep=settings.job_sweep_interval, abort=1),
    )


def _observe(job: Job) -> None:
    """The attempt's metrics, and a warning for a failed one (its error on one line, as `GET /jobs/{id}` shows it)."""
    JOB_OUTCOMES.labels(job.function, job.status.value).inc()
    if job.started:  # SAQ's times are epoch milliseconds
        JOB_DURATIONS.labels(job.function).observe(max((job.completed or now()) - job.started, 0) / 1000)
    if job.status in (Status.FAILED, Status.QUEUED) and (error := error_line(job.error)):
        log.warning("job attempt failed", status=job.status.value, error=error)


@asynccontextmanager
async def worker_in_process(settings: Settings, tracing: Tracing | None = None) -> AsyncIterator[None]:
    """A worker inside an API process, for development (WORKER_IN_PROCESS), stopped when the block ends."""
    queue = make_queue(settings, pool_size=settings.worker_concurrency + 2)
    await queue.connect()
    worker = make_worker(settings, queue, tracing)
    worker.SIGNALS = []  # the server owns SIGTERM and SIGINT
    running = asyncio.create_task(worker.start())
    try:
        yield
    finally:
        running.cancel()  # Worker.start() takes this as its stop signal and shuts down gracefully
        await running
        await queue.disconnect()


async def run_worker(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT; its metrics on WORKER_METRICS_PORT (`/metrics`)."""
    tracing = start_tracing()  # None unless the OTEL_* variables switch it on
    configure_logging(settings, trace_ids=tracing is not None)
    set_recording(enabled=settings.events_enabled)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.host)
    queue = make_queue(settings, pool_size=settings.worker_concurrency + 2)
    await queue.connect()
    try:
        await make_worker(settings, queue, tracing).start()
    finally:
        await queue.disconnect()
        if tracing is not None:
            await tracing.shutdown()


def main(settings: Settings) -> None:
    asyncio.run(run_worker(settings))
