"""Jobs: starting background work on the queue, following it, and stopping it.

SAQ's job is the one record of a job. Its key is the job id (a UUIDv7); its `meta` names the owner and the
kind and holds the progress and the result file; its status, attempts, error and times are SAQ's own; and
SAQ keeps it JOB_RESULT_TTL seconds once it has finished, so it is exactly as durable as the queue.
`Jobs.submit` enqueues it; the worker runs the task as a `job_task`, which reports through a `JobRun`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from saq import Job, Queue
from saq.job import Status
from saq.types import Context
from uuid_utils.compat import uuid7

from accounts.config import Settings
from accounts.core.errors import Conflict, NotFound
from accounts.jobs.schemas import FINAL_STATUSES, JobProgress, JobRead, JobStatus

log = structlog.get_logger("accounts.jobs")
P = ParamSpec("P")
R = TypeVar("R")
_FENCE_KEY = "hashtextextended($1::uuid::text, 0)"
"""A job id as the bigint key of the advisory lock that fences its runs (see `job_task`)."""

OWNER, KIND, PROGRESS, RESULT = "owner", "kind", "progress", "result"
"""The keys of a job's SAQ `meta`: `Principal.identity` of its creator, what it does, {processed, total,
failed}, and {path, media_type} of its result file once written."""
ABORTED_BY_CALLER = "Aborted at the caller's request."
WORKER_STOPPED = "The worker running this job stopped."
"""The error SAQ's sweep gives a job whose worker it took for dead (the queue's `swept_error_message`)."""
_STATUSES: dict[Status, JobStatus] = {
    Status.NEW: "queued",
    Status.QUEUED: "queued",
    Status.ACTIVE: "active",
    Status.ABORTING: "aborted",
    Status.ABORTED: "aborted",
    Status.FAILED: "failed",
    Status.COMPLETE: "complete",
}
_NO_PROGRESS = {"processed": 0, "total": None, "failed": 0}
FOLLOW_SECONDS = 0.5
"""How often `Jobs.follow` looks at a job (SAQ's own `listen` polls as often; a Redis or a PostgreSQL queue alike)."""


class WorkerContext(Context, total=False):
    """What every task receives: SAQ's context plus what the worker opened at start-up."""

    settings: Settings
    pool: asyncpg.Pool
    fence: PoolConnectionProxy[asyncpg.Record]
    """The connection of the running `job_task`, holding its fence until `end_run`."""


class JobFinished(Conflict):
    """409: the job already finished; there is nothing to abort."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """How SAQ runs one kind of task: a timeout per attempt, attempts in all, a heartbeat for long jobs."""

    timeout: int
    retries: int = 3
    heartbeat: int = 0
    """Seconds without a heartbeat after which a sweep takes the attempt's worker for dead (0: only the
    timeout counts). A `job_task` refreshes it every third of that while it runs."""
    retry_delay: float = 1.0  # doubled after each attempt (SAQ's back-off)


class Jobs:
    """Starting, reading and aborting the jobs callers own, on the queue."""

    def __init__(self, queue: Queue, result_ttl: int) -> None:
        self.queue = queue
        self.result_ttl = result_ttl
        self._connecting = asyncio.Lock()

    async def connect(self) -> None:
        """Connect the queue on first use, so the API starts (and is live) while its backend is down."""
        async with self._connecting:
            await self.queue.connect()  # a no-op once connected

    async def submit(self, function: str, spec: JobSpec, owner: str, **kwargs: Any) -> JobRead:
        """Put a job for `owner` on the queue: one enqueue, the job's only record."""
        await self.connect()
        job_id = str(uuid7())
        job = Job(
            function=function,
            kwargs={"job_id": job_id, **kwargs},
            key=job_id,
            timeout=spec.timeout,
            retries=spec.retries,
            heartbeat=spec.heartbeat,
            retry_delay=spec.retry_delay,
            retry_backoff=True,
            ttl=self.result_ttl,
            meta={OWNER: owner, KIND: function},
        )
        await self.queue.enqueue(job)
        return to_read(job)

    async def get(self, job_id: UUID) -> Job:
        """The job, as SAQ has it; NotFound for an unknown or expired one, or a job no caller started."""
        await self.connect()
        job = await self.queue.job(str(job_id))
        if job is None or OWNER not in job.meta:
            raise NotFound(f"No job has the id {job_id}.")
        return job

    async def read(self, job_id: UUID) -> JobRead:
        return to_read(await self.get(job_id))

    async def follow(self, job: Job, heartbeat: float) -> AsyncIterator[JobRead | None]:
        """The job as it changes: its state now, then each change, ending with its final state (or when SAQ
        forgets it); None after `heartbeat` seconds without a change, so a stream can say it is alive."""
        last: JobRead | None = None
        quiet = 0.0
        while True:
            current = to_read(job)
            if current != last:
                yield current
                if current.status in FINAL_STATUSES:
                    return
                last, quiet = current, 0.0
            elif quiet >= heartbeat:
                yield None
                quiet = 0.0
            await asyncio.sleep(FOLLOW_SECONDS)
            quiet += FOLLOW_SECONDS
            refreshed = await self.queue.job(job.key)
            if refreshed is None:
                return
            job = refreshed

    async def abort(self, job: Job) -> None:
        """Abort a queued or running job: SAQ takes a queued one off the queue, and its worker cancels a running
        one within a second."""
        if status_of(job) in FINAL_STATUSES:
            raise JobFinished("The job has already finished; there is nothing to abort.")
        waiting = job.status == Status.QUEUED
        await self.queue.abort(job, error=ABORTED_BY_CALLER)
        if waiting and job.status == Status.ABORTING:
            # Redis leaves a job that waits for its retry (off the queued list) aborting, with no worker to end it.
            await self.queue.finish(job, Status.ABORTED, error=ABORTED_BY_CALLER)


def status_of(job: Job) -> JobStatus:
    """The caller's view of SAQ's status. A sweep marks a job it takes for dead aborting until it is queued
    again (or given up): that is still the running job, not an abort."""
    if job.status == Status.ABORTING and job.error == WORKER_STOPPED:
        return "active"
    return _STATUSES[job.status]


def error_line(error: str | None) -> str | None:
    """What went wrong in one line, from SAQ's error text: a traceback's exception (`ValueError: ...`, its
    message on one line), or SAQ's own word ("cancelled", the sweep's, the caller's abort)."""
    if not error:
        return None
    lines = error.strip().splitlines()
    # A traceback's frames are indented; the exception and its message follow the last of them.
    last_frame = max((n for n, line in enumerate(lines) if line[:1].isspace()), default=-1)
    return " ".join(" ".join(lines[last_frame + 1 :]).split())[:500] or None


def to_read(job: Job) -> JobRead:
    status = status_of(job)
    result = job.meta.get(RESULT)
    return JobRead(
        id=UUID(job.key),
        kind=job.meta[KIND],
        status=status,
        attempts=job.attempts,
        progress=JobProgress(**job.meta.get(PROGRESS, _NO_PROGRESS)),
        error=error_line(job.error),
        result_url=f"/api/v1/jobs/{job.key}/result" if result and status == "complete" else None,
        created_at=_time(job.queued),
        started_at=_time(job.started) if job.started else None,
        finished_at=_time(job.completed) if job.completed else None,
    )


def _time(epoch_ms: int) -> datetime:
    """One of SAQ's times: epoch milliseconds (0 for not yet)."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def kept_result(job: Job) -> tuple[Path, str] | None:
    """The path and media type of the job's result file, once its task has kept one."""
    result = job.meta.get(RESULT)
    return (Path(result["path"]), result["media_type"]) if result else None


class JobRun:
    """A task's handle on its job while it runs: the connection it works on, progress and the result file."""

    def __init__(self, ctx: WorkerContext, job_id: UUID, connection: PoolConnectionProxy[asyncpg.Record]) -> None:
        self.id = job_id
        self.job = ctx["job"]
        self.settings = ctx["settings"]
        self.connection = connection  # holds the run's fence (job_task): the task does its work on it too

    async def report(self, *, processed: int, total: int | None = None, failed: int = 0) -> None:
        """Record progress in the job's meta; the write is also SAQ's heartbeat."""
        progress = {"processed": processed, "total": total, "failed": failed}
        fraction = min(processed / total, 1.0) if total else self.job.progress
        await self.job.update(progress=fraction, meta={**self.job.meta, PROGRESS: progress})

    def result_file(self, suffix: str) -> Path:
        results_dir = results_folder(self.settings)
        results_dir.mkdir(parents=True, exist_ok=True)
        return results_dir / f"{self.id}{suffix}"

    async def keep_result(self, path: Path, media_type: str) -> None:
        await self.job.update(meta={**self.job.meta, RESULT: {"path": str(path), "media_type": media_type}})


def job_task(
    task: Callable[Concatenate[JobRun, P], Awaitable[R]],
) -> Callable[Concatenate[WorkerContext, P], Awaitable[R | None]]:
    """The SAQ task that runs `task` for a job started through `Jobs.submit`, one run of a job at a time.

    A run works on one pool connection holding a session advisory lock on the job id, from before it looks
    at the job until after SAQ has recorded how it ended (the worker's after_process calls `end_run`). A run
    swept back onto the queue while an earlier one still lives (its event loop stalled past the heartbeat)
    waits for that one to end, then asks SAQ: a job the earlier run completed it takes as it is and does
    nothing, so SAQ's finish of this run writes the same record again; an aborted one it leaves to its
    worker's abort check. A killed worker's connection closes, and the pool unlocks a connection given back,
    so the lock never outlives its run. While the task runs, a ticker keeps its heartbeat fresh."""

    @functools.wraps(task)
    async def fenced(ctx: WorkerContext, /, *args: P.args, **kwargs: P.kwargs) -> R | None:
        job = ctx["job"]
        job_id = UUID((job.kwargs or {})["job_id"])
        connection = ctx["fence"] = await ctx["pool"].acquire()
        if not await connection.fetchval(f"SELECT pg_try_advisory_lock({_FENCE_KEY})", job_id):
            log.warning("an earlier run of this job is still going; waiting for it to end")
            await connection.execute(f"SELECT pg_advisory_lock({_FENCE_KEY})", job_id)
        # Asked once the lock is held: an earlier run let go of it only after SAQ had recorded its end.
        recorded = await job.get_queue().job(str(job_id))
        status = status_of(recorded) if recorded is not None else None
        if status == "aborted":
            log.info("the job was aborted; waiting for the worker to stop this run")
            await asyncio.get_running_loop().create_future()  # the abort check cancels it within a second
        if recorded is None or status in FINAL_STATUSES:
            log.info("the job has already finished; this run does nothing")
            if recorded is not None and recorded.key == job.key:
                job.replace(recorded)  # SAQ's finish of this run then writes the record as the earlier run left it
            return None if recorded is None else recorded.result
        async with _heartbeat(job):
            return await task(JobRun(ctx, job_id, connection), *args, **kwargs)

    return fenced


async def end_run(ctx: WorkerContext) -> None:
    """Let go of the run's fence, if it took one: the worker calls it once SAQ has recorded the attempt's end."""
    if (connection := ctx.pop("fence", None)) is not None:
        await ctx["pool"].release(connection)


@asynccontextmanager
async def _heartbeat(job: Job) -> AsyncIterator[None]:
    """SAQ's heartbeat refreshed every third of it while the block runs, whether or not the task reports:
    a dead worker's job is swept soon after its short heartbeat, however long the job may take. The ticker
    stops with the block, before the task returns, so it never writes over the status SAQ then records."""
    if not job.heartbeat:
        yield
        return
    ticker = asyncio.create_task(_beat(job))
    try:
        yield
    finally:
        ticker.cancel()
        await asyncio.wait({ticker})


async def _beat(job: Job) -> None:
    while True:
        await asyncio.sleep(job.heartbeat / 3)
        try:
            await job.update()
        except Exception:  # a queue blip must not fail the job; the next beat tries again
            log.warning("could not refresh the job's heartbeat", exc_info=True)


def results_folder(settings: Settings) -> Path:
    """Where jobs keep their result files (shared storage when workers run on several machines)."""
    return settings.data_path / "jobs"


def purge_results(settings: Settings) -> int:
    """Delete the result files last modified more than JOB_RESULT_TTL ago: SAQ has forgotten their jobs by then,
    and what a killed worker left half written goes too. Returns how many went."""
    folder, cutoff = results_folder(settings), time.time() - settings.job_result_ttl
    if not folder.is_dir():
        return 0
    deleted = 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:  # gone meanwhile: another worker's purge
            continue
    return deleted
