"""A job's life on the queue, run by the in-process worker (accounts.worker) on each backend, as callers read it
(`Jobs.read`, what `GET /api/v1/jobs/{id}` answers): from queued to active to complete or failed, with attempts,
progress, timestamps and a one-line error, all from SAQ's own job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from saq import Job, Queue
from saq.job import Status

from accounts.jobs.schemas import JobProgress
from accounts.jobs.services import Jobs, JobSpec
from tests.integration.auth.support import sql
from tests.integration.jobs.support import InProcessWorker, saq_job, wait_for, wait_for_saq_status, wait_for_status
from tests.integration.jobs.tasks import ATTEMPTS, FAILURE, GATES, QUICK

OWNER = "user:0196a000-0000-7000-8000-000000000001"


async def test_a_job_goes_from_queued_to_active_to_complete(
    backend: str, jobs: Jobs, in_process: InProcessWorker
) -> None:
    submitted = await jobs.submit("test_count_to", QUICK, OWNER, total=3, hold=True)
    job_id = submitted.id

    queued = await jobs.read(job_id)
    assert queued == submitted, "the submitter's answer is the job as it stands"
    assert (queued.status, queued.kind, queued.attempts) == ("queued", "test_count_to", 0)
    assert queued.progress == JobProgress(processed=0, total=None, failed=0)
    assert (queued.started_at, queued.finished_at, queued.error, queued.result_url) == (None, None, None, None)
    recorded = await saq_job(jobs, job_id)
    assert recorded.status.value == "queued"
    assert (recorded.meta["owner"], recorded.meta["kind"]) == (OWNER, "test_count_to")
    assert recorded.ttl == jobs.result_ttl, "SAQ keeps the finished job JOB_RESULT_TTL seconds"

    await in_process.start()
    active = await wait_for(jobs, job_id, lambda job: job.status == "active" and job.progress.processed == 1)
    assert active.attempts == 1
    assert active.progress == JobProgress(processed=1, total=3, failed=0)
    assert active.started_at is not None
    assert active.started_at >= active.created_at
    assert active.finished_at is None

    GATES[str(job_id)].set()
    done = await wait_for_status(jobs, job_id, "complete")
    assert done.attempts == 1
    assert done.progress == JobProgress(processed=3, total=3, failed=1)
    assert done.error is None
    assert done.result_url is None
    assert done.started_at == active.started_at
    assert done.created_at == queued.created_at
    assert done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at
    assert len(ATTEMPTS[str(job_id)]) == 1


async def test_a_task_that_fails_once_then_succeeds_completes_on_its_second_attempt(
    backend: str, jobs: Jobs, running_worker: InProcessWorker
) -> None:
    job_id = (await jobs.submit("test_flaky", QUICK, OWNER, failures=1)).id

    done = await wait_for_status(jobs, job_id, "complete")

    assert done.attempts == 2
    assert done.error is None, "a job that completed keeps no error of an earlier attempt"
    assert (done.progress.processed, done.progress.total) == (1, 1)
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.started_at <= done.finished_at
    assert len(ATTEMPTS[str(job_id)]) == 2


async def test_a_task_that_fails_twice_then_succeeds_completes_on_its_third_and_last_attempt(
    backend: str, jobs: Jobs, running_worker: InProcessWorker
) -> None:
    job_id = (await jobs.submit("test_flaky", QUICK, OWNER, failures=2)).id

    done = await wait_for_status(jobs, job_id, "complete")

    assert done.attempts == 3
    assert len(ATTEMPTS[str(job_id)]) == 3


async def test_a_task_that_always_fails_ends_failed_after_its_retries_with_a_one_line_error(
    backend: str, jobs: Jobs, running_worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("saq.utils.random", lambda: 1.0)  # no jitter: the back-off is exactly 1.5 s, then 3 s
    spec = JobSpec(timeout=30, retries=3, retry_delay=1.5)
    job_id = (await jobs.submit("test_always_fails", spec, OWNER)).id

    between = await wait_for(jobs, job_id, lambda job: job.attempts == 1 and job.status == "queued")
    assert between.error == f"RuntimeError: {FAILURE}", "the failed attempt's error is shown while it waits"
    assert between.finished_at is None

    failed = await wait_for_status(jobs, job_id, "failed", within=20)
    assert failed.attempts == 3
    assert failed.error == f"RuntimeError: {FAILURE}"
    assert failed.started_at is not None
    assert failed.finished_at is not None
    assert failed.started_at <= failed.finished_at
    assert "Traceback" in ((await saq_job(jobs, job_id)).error or ""), "SAQ keeps the traceback; callers see a line"

    starts = ATTEMPTS[str(job_id)]
    assert len(starts) == 3
    first_wait, second_wait = starts[1] - starts[0], starts[2] - starts[1]
    # The PostgreSQL queue schedules in whole seconds (it truncates), so a wait can be up to 1 s short.
    assert 0.5 <= first_wait < 1.5 + 2.0, starts
    assert 2.0 <= second_wait < 3.0 + 2.0, starts
    assert second_wait > first_wait, "the back-off grows"


async def test_a_task_with_one_attempt_is_not_retried(
    backend: str, jobs: Jobs, running_worker: InProcessWorker
) -> None:
    job_id = (await jobs.submit("test_always_fails", JobSpec(timeout=30, retries=1), OWNER)).id

    failed = await wait_for_status(jobs, job_id, "failed")

    assert failed.attempts == 1
    assert failed.error == f"RuntimeError: {FAILURE}"
    assert len(ATTEMPTS[str(job_id)]) == 1


async def test_an_attempt_that_outlives_its_timeout_is_stopped_and_fails(
    backend: str, jobs: Jobs, running_worker: InProcessWorker
) -> None:
    job_id = (await jobs.submit("test_count_to", JobSpec(timeout=1, retries=1), OWNER, total=5, step=10)).id

    failed = await wait_for_status(jobs, job_id, "failed", within=10)

    assert failed.attempts == 1
    assert failed.progress.processed == 1, "the attempt was stopped during its first step"
    assert failed.error == "TimeoutError"


async def test_many_jobs_each_complete_once(backend: str, jobs: Jobs, running_worker: InProcessWorker) -> None:
    job_ids = [(await jobs.submit("test_noop", QUICK, OWNER)).id for _ in range(20)]

    for job_id in job_ids:
        done = await wait_for_status(jobs, job_id, "complete")
        assert done.attempts == 1
        assert len(ATTEMPTS[str(job_id)]) == 1


async def test_the_error_of_a_multi_line_message_still_names_the_exception(
    backend: str, jobs: Jobs, running_worker: InProcessWorker
) -> None:
    message = "the upload could not be parsed\nline 7: unexpected quote"
    job_id = (await jobs.submit("test_always_fails", JobSpec(timeout=30, retries=1), OWNER, message=message)).id

    failed = await wait_for_status(jobs, job_id, "failed")

    assert failed.error == "RuntimeError: the upload could not be parsed line 7: unexpected quote"


# --- one run of a job at a time, with a fresh heartbeat -----------------------------------------


async def waiting_for_locks(database_url: str) -> int:
    """Sessions of the test database waiting for an advisory lock (SAQ's own locks never wait)."""
    [record] = await sql(
        database_url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    return int(record[0])


async def test_a_second_run_of_a_job_waits_for_the_first_and_then_does_nothing_as_the_job_is_complete(
    backend: str, jobs: Jobs, running_worker: InProcessWorker, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    saq_finish = Queue.finish

    async def slow_finish(queue: Queue, job: Job, status: Status, **kwargs: Any) -> None:
        if job.key == str(job_id):
            await asyncio.sleep(0.5)  # SAQ records the first run's end well after its task returned
        await saq_finish(queue, job, status, **kwargs)

    monkeypatch.setattr(Queue, "finish", slow_finish)
    job_id = (await jobs.submit("test_count_to", QUICK, OWNER, total=2, hold=True)).id
    await wait_for(jobs, job_id, lambda job: job.progress.processed == 1)
    # As when a sweep takes a stalled but live worker for dead and the job runs again (here under another
    # SAQ key, so that SAQ runs both at once); the fence is on the job id.
    again = Job("test_count_to", kwargs={"job_id": str(job_id), "total": 2}, key=f"{job_id}-again", timeout=30)
    await jobs.queue.enqueue(again)
    deadline = time.monotonic() + 15
    while await waiting_for_locks(database_url) == 0:
        assert time.monotonic() < deadline, "the second run never waited for the first"
        await asyncio.sleep(0.05)
    assert len(ATTEMPTS[str(job_id)]) == 1, "the second run waits before it does anything"

    GATES[str(job_id)].set()
    second = await wait_for_saq_status(jobs, again.key, "complete")

    assert len(ATTEMPTS[str(job_id)]) == 1, "the fence held until SAQ had the job complete: the second run did nothing"
    first = await saq_job(jobs, job_id)
    assert second.result == first.result == 2, "it returned what the first run returned, so SAQ records the same"
    done = await jobs.read(job_id)
    assert (done.status, done.progress.processed, done.progress.total) == ("complete", 2, 2)
    assert await waiting_for_locks(database_url) == 0


async def test_a_silent_task_keeps_its_heartbeat_fresh_until_it_returns(
    backend: str, jobs: Jobs, running_worker: InProcessWorker
) -> None:
    heartbeat = 1
    spec = JobSpec(timeout=30, retries=1, heartbeat=heartbeat)
    job_id = (await jobs.submit("test_count_to", spec, OWNER, total=1, hold=True)).id
    await wait_for(jobs, job_id, lambda job: job.progress.processed == 1)

    await asyncio.sleep(2.5 * heartbeat)  # the task reports nothing while it waits at its gate
    silent = await saq_job(jobs, job_id)
    assert silent.status.value == "active"
    assert not silent.stuck, "a sweep now would take the live worker for dead"

    GATES[str(job_id)].set()
    finished = await wait_for_saq_status(jobs, job_id, "complete")
    await asyncio.sleep(heartbeat)  # three beats' time: a ticker still running would have written by now
    later = await saq_job(jobs, job_id)
    assert (later.status.value, later.touched) == ("complete", finished.touched)
