"""Jobs: starting background work on the queue, following it, and stopping it.

The API side creates the `jobs` row and enqueues the SAQ job under the same id (`Jobs.submit`); the
worker side runs the task as a `job_task`, which reports progress through a `JobRun`, and the worker's
hooks (accounts.worker) record each attempt's start and end, so the row always says what SAQ did.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from saq import Job, Queue
from saq.types import Context
from uuid_utils.compat import uuid7

from accounts.config import Settings
from accounts.core.errors import Conflict, NotFound
from accounts.jobs.schemas import JobProgress, JobRead

log = structlog.get_logger("accounts.jobs")
P = ParamSpec("P")
R = TypeVar("R")
_FENCE_KEY = "hashtextextended($1::uuid::text, 0)"
"""A job id as the bigint key of the advisory lock that fences its runs (see `job_task`)."""

_COLUMNS = (
    "id, kind, owner, status, attempts, processed, total, failed, error, result_path,"
    " result_media_type, created_at, started_at, finished_at"
)


class WorkerContext(Context, total=False):
    """What every task receives: SAQ's context plus what the worker opened at start-up."""

    settings: Settings
    pool: asyncpg.Pool
    jobs: JobStore
    attempts: AttemptLog


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


class JobStore:
    """The `jobs` table on the asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._to_create: list[tuple[UUID, str, str, asyncio.Future[None]]] = []
        self._creating: asyncio.Task[None] | None = None

    async def create(self, kind: str, owner: str) -> UUID:
        """Insert a queued job's row. Rows asked for while an insert is under way go in together in the next
        one, as a group commit: a lone job waits for nothing, a burst costs a round trip per batch."""
        job_id = uuid7()
        created = asyncio.get_running_loop().create_future()
        self._to_create.append((job_id, kind, owner, created))
        if self._creating is None or self._creating.done():
            self._creating = asyncio.create_task(self._create_pending())
        await created
        return job_id

    async def _create_pending(self) -> None:
        while self._to_create:
            # A caller cancelled before its turn (its request went away) gets no row to leave behind.
            batch = [row for row in self._to_create if not row[3].cancelled()]
            self._to_create = []
            try:
                await self.pool.execute(
                    "INSERT INTO jobs (id, kind, owner, status, attempts, processed, failed, created_at, updated_at)"
                    " SELECT id, kind, owner, 'queued', 0, 0, 0, now(), now()"
                    " FROM unnest($1::uuid[], $2::varchar[], $3::varchar[]) AS t (id, kind, owner)",
                    [job_id for job_id, _, _, _ in batch],
                    [kind for _, kind, _, _ in batch],
                    [owner for _, _, owner, _ in batch],
                )
            except asyncio.CancelledError:  # the loop is closing: nobody is left to insert for the waiting callers
                for *_, created in batch + self._to_create:
                    created.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - whatever failed, each caller gets it as its own
                for *_, created in batch:
                    if not created.done():
                        created.set_exception(exc)
            else:
                for *_, created in batch:
                    if not created.done():
                        created.set_result(None)

    async def get(self, job_id: UUID) -> asyncpg.Record:
        record = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1", job_id)  # noqa: S608
        if record is None:
            raise NotFound(f"No job has the id {job_id}.")
        return record

    async def delete(self, job_id: UUID) -> None:
        await self.pool.execute("DELETE FROM jobs WHERE id = $1", job_id)

    async def ended(self, job_id: UUID, status: str, error: str | None) -> None:
        """Record how an attempt ended at once (the sweep's verdicts; the worker's go through AttemptLog)."""
        await self.pool.execute(
            "UPDATE jobs SET status = $2, error = $3, updated_at = now(),"
            " finished_at = CASE WHEN $2::varchar = 'queued' THEN NULL ELSE now() END"
            " WHERE id = $1 AND status NOT IN ('aborted', 'complete', 'failed')",
            job_id,
            status,
            error,
        )

    async def progress(self, job_id: UUID, attempt: int, *, processed: int, total: int | None, failed: int) -> None:
        """Record progress; it also shows the job active, whatever the batched AttemptLog has written yet."""
        await self.pool.execute(
            "UPDATE jobs SET processed = $3, total = $4, failed = $5, attempts = greatest(attempts, $2),"
            " status = CASE WHEN status = 'queued' THEN 'active' ELSE status END,"
            " started_at = coalesce(started_at, now()), updated_at = now() WHERE id = $1",
            job_id,
            attempt,
            processed,
            total,
            failed,
        )

    async def set_result(self, job_id: UUID, path: Path, media_type: str) -> None:
        await self.pool.execute(
            "UPDATE jobs SET result_path = $2, result_media_type = $3, updated_at = now() WHERE id = $1",
            job_id,
            str(path),
            media_type,
        )

    async def abort(self, job_id: UUID) -> bool:
        """Mark a queued or active job aborted; False when it had already finished."""
        aborted = await self.pool.fetchval(
            "UPDATE jobs SET status = 'aborted', error = 'Aborted at the caller''s request.', finished_at = now(),"
            " updated_at = now() WHERE id = $1 AND status IN ('queued', 'active') RETURNING true",
            job_id,
        )
        return bool(aborted)


class AttemptLog:
    """The worker's record of attempts starting and ending, written to the `jobs` rows in batches.

    One statement every `interval` seconds covers every attempt that started or ended meanwhile, instead
    of two writes per job (with them, no-op jobs ran at half of bare SAQ's rate). A worker killed outright
    loses at most the last interval's records; the queue's sweep settles those jobs (accounts.worker)."""

    def __init__(self, pool: asyncpg.Pool, interval: float = 0.05) -> None:
        self.pool = pool
        self.interval = interval
        self._pending: dict[UUID, tuple[str, int, str | None]] = {}

    def started(self, job_id: UUID, attempt: int) -> None:
        self._pending[job_id] = ("active", attempt, None)

    def ended(self, job_id: UUID, attempt: int, status: str, error: str | None) -> None:
        """How an attempt ended: a final status, or `queued` again for a retry."""
        self._pending[job_id] = (status, attempt, error)

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await _record_attempts(self.pool, pending)
        except BaseException:
            self._pending = pending | self._pending  # newer records win; the next flush retries the rest
            raise

    async def run(self) -> None:
        """Flush every `interval` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.flush()
                except Exception:  # a database blip must not stop the recording; the records wait
                    log.warning("could not record job attempts; retrying", exc_info=True)
        finally:
            await self.flush()


async def _record_attempts(
    executor: asyncpg.Pool | PoolConnectionProxy[asyncpg.Record], attempts: dict[UUID, tuple[str, int, str | None]]
) -> None:
    """Write how attempts started or ended, by job id: (status, attempt, error). A final row stays final."""
    await executor.execute(
        "UPDATE jobs SET status = u.status, attempts = greatest(jobs.attempts, u.attempts),"
        " error = CASE WHEN u.status = 'active' THEN jobs.error ELSE u.error END,"
        " started_at = coalesce(jobs.started_at, now()),"
        " finished_at = CASE WHEN u.status IN ('queued', 'active') THEN NULL ELSE now() END,"
        " updated_at = now()"
        " FROM unnest($1::uuid[], $2::varchar[], $3::int[], $4::text[]) AS u (id, status, attempts, error)"
        " WHERE jobs.id = u.id AND jobs.status NOT IN ('aborted', 'complete', 'failed')",
        list(attempts),
        [status for status, _, _ in attempts.values()],
        [attempt for _, attempt, _ in attempts.values()],
        [error for _, _, error in attempts.values()],
    )


class Jobs:
    """Starting, reading and aborting the jobs callers own."""

    def __init__(self, store: JobStore, queue: Queue) -> None:
        self.store = store
        self.queue = queue
        self._connecting = asyncio.Lock()

    async def connect(self) -> None:
        """Connect the queue on first use, so the API starts (and is live) while its backend is down."""
        async with self._connecting:
            await self.queue.connect()  # a no-op once connected

    async def submit(self, function: str, spec: JobSpec, owner: str, **kwargs: Any) -> UUID:
        """Record a job for `owner` and put it on the queue (its SAQ key is the job id)."""
        await self.connect()
        job_id = await self.store.create(function, owner)
        job = Job(
            function=function,
            kwargs={"job_id": str(job_id), **kwargs},
            key=str(job_id),
            timeout=spec.timeout,
            retries=spec.retries,
            heartbeat=spec.heartbeat,
            retry_delay=spec.retry_delay,
            retry_backoff=True,
            ttl=3600,
        )
        try:
            await self.queue.enqueue(job)
        except BaseException:
            await self.store.delete(job_id)  # nothing will run it: leave no job that stays queued forever
            raise
        return job_id

    async def read(self, job_id: UUID) -> JobRead:
        return to_read(await self.store.get(job_id))

    async def owner(self, job_id: UUID) -> str:
        record = await self.store.get(job_id)
        return str(record["owner"])

    async def abort(self, job_id: UUID) -> None:
        if not await self.store.abort(job_id):
            raise JobFinished("The job has already finished; there is nothing to abort.")
        await self.connect()
        job = await self.queue.job(str(job_id))
        if job is not None:
            await self.queue.abort(job, error="aborted at the caller's request")


class JobRun:
    """A task's handle on its job while it runs: the connection it works on, progress and the result file."""

    def __init__(self, ctx: WorkerContext, job_id: UUID, connection: PoolConnectionProxy[asyncpg.Record]) -> None:
        self.id = job_id
        self.job = ctx["job"]
        self.store = ctx["jobs"]
        self.settings = ctx["settings"]
        self.connection = connection  # holds the run's fence (job_task): the task does its work on it too

    async def report(self, *, processed: int, total: int | None = None, failed: int = 0) -> None:
        await self.store.progress(self.id, self.job.attempts, processed=processed, total=total, failed=failed)
        if total:
            await self.job.update(progress=min(processed / total, 1.0))  # also SAQ's heartbeat
        else:
            await self.job.update()

    def result_file(self, suffix: str) -> Path:
        results_dir = self.settings.data_path / "jobs"
        results_dir.mkdir(parents=True, exist_ok=True)
        return results_dir / f"{self.id}{suffix}"

    async def keep_result(self, path: Path, media_type: str) -> None:
        await self.store.set_result(self.id, path, media_type)


def job_task(
    task: Callable[Concatenate[JobRun, P], Awaitable[R]],
) -> Callable[Concatenate[WorkerContext, P], Awaitable[R | None]]:
    """The SAQ task that runs `task` for a job started through `Jobs.submit`, one run of a job at a time.

    A run works on one pool connection holding a session advisory lock on the job id. A run swept back
    onto the queue while an earlier one still lives (its event loop stalled past the heartbeat) waits for
    that one to end, then does nothing if the job is finished. A killed worker's connection closes, and
    the pool unlocks a connection given back, so the lock never outlives its run. While a task with a
    heartbeat runs, a ticker keeps the heartbeat fresh."""

    @functools.wraps(task)
    async def fenced(ctx: WorkerContext, /, *args: P.args, **kwargs: P.kwargs) -> R | None:
        job_id = tracked_id(ctx)
        if job_id is None:
            msg = f"{ctx['job'].function} was not started through Jobs.submit"
            raise RuntimeError(msg)
        async with ctx["pool"].acquire() as connection, _heartbeat(ctx["job"]):
            if not await connection.fetchval(f"SELECT pg_try_advisory_lock({_FENCE_KEY})", job_id):
                log.warning("an earlier run of this job is still going; waiting for it to end")
                await connection.execute(f"SELECT pg_advisory_lock({_FENCE_KEY})", job_id)
            # Read after the lock is held, in a statement of its own: its snapshot must follow the earlier run.
            if await connection.fetchval(
                "SELECT status IN ('aborted', 'complete', 'failed') FROM jobs WHERE id = $1", job_id
            ):
                log.info("the job has already finished; this attempt does nothing")
                return None
            result = await task(JobRun(ctx, job_id, connection), *args, **kwargs)
            # Complete before the lock is let go, so that the next run to take it sees the work done.
            await _record_attempts(connection, {job_id: ("complete", ctx["job"].attempts, None)})
            return result

    return fenced


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


def tracked_id(ctx: Context) -> UUID | None:
    """The job record of the running task, if it has one."""
    return tracked_id_of(ctx["job"])


def tracked_id_of(job: Job) -> UUID | None:
    """The job record of a SAQ job started through `Jobs.submit`, if it is one."""
    value = (job.kwargs or {}).get("job_id")
    return UUID(value) if value else None


def to_read(record: asyncpg.Record) -> JobRead:
    result_url = f"/api/v1/jobs/{record['id']}/result" if record["result_path"] else None
    return JobRead(
        id=record["id"],
        kind=record["kind"],
        status=record["status"],
        attempts=record["attempts"],
        progress=JobProgress(processed=record["processed"], total=record["total"], failed=record["failed"]),
        error=record["error"],
        result_url=result_url if record["status"] == "complete" else None,
        created_at=record["created_at"],
        started_at=record["started_at"],
        finished_at=record["finished_at"],
    )
