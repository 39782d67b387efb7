"""The worker as a process (`accounts.worker.main`, what `accounts worker` runs), on each backend: a job survives
its worker being killed or stopped, its log lines carry the job's context, and the command line behaves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from accounts.jobs.services import Jobs, JobSpec
from tests.integration.jobs.support import ROOT, SpawnWorker, WorkerProcess, saq_job, wait_for, wait_for_status
from tests.integration.jobs.tasks import QUICK

OWNER = "user:0196a000-0000-7000-8000-000000000002"
HEARTBEAT = 2
"""Seconds without progress after which SAQ takes a job's worker for dead."""
SURVIVES = JobSpec(timeout=120, retries=3, heartbeat=HEARTBEAT, retry_delay=0.1)
START = 60.0
"""Seconds a new worker process may take to start and pick up a job."""


def json_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    """Every line the worker wrote, each of which must be a JSON object."""
    lines = []
    for line in worker.output.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON line: {line!r}")
    return lines


async def stop(worker: WorkerProcess, *, within: float = 15.0) -> None:
    worker.signal(signal.SIGTERM)
    assert await worker.exit_code(within) == 0, worker.output


# --- a killed worker ----------------------------------------------------------------------------


async def test_a_job_whose_worker_is_killed_completes_after_a_new_worker_starts(
    backend: str, jobs: Jobs, spawn_worker: SpawnWorker
) -> None:
    job_id = (await jobs.submit("test_count_to", SURVIVES, OWNER, total=8, step=0.4)).id
    first = spawn_worker()
    await wait_for(jobs, job_id, lambda job: job.status == "active" and job.progress.processed >= 2, within=START)

    first.signal(signal.SIGKILL)
    assert await first.exit_code(10) == -signal.SIGKILL
    stranded = await jobs.read(job_id)
    assert stranded.status == "active"
    assert stranded.attempts == 1
    assert stranded.progress.processed < 8

    await asyncio.sleep(HEARTBEAT + 0.5)  # the job's heartbeat has lapsed: the next sweep takes it back
    second = spawn_worker()
    done = await wait_for_status(jobs, job_id, "complete", within=START)

    assert done.attempts == 2
    assert (done.progress.processed, done.progress.total) == (8, 8)
    assert done.error is None
    assert done.created_at == stranded.created_at
    assert stranded.started_at is not None
    assert done.started_at is not None
    assert done.finished_at is not None
    assert stranded.started_at < done.started_at <= done.finished_at, "started_at is the last attempt's start"
    await stop(second)


async def test_a_killed_workers_job_with_no_attempt_left_ends_with_a_final_status(
    backend: str, jobs: Jobs, spawn_worker: SpawnWorker
) -> None:
    spec = JobSpec(timeout=120, retries=1, heartbeat=HEARTBEAT)
    job_id = (await jobs.submit("test_count_to", spec, OWNER, total=50, step=0.4)).id
    first = spawn_worker()
    await wait_for(jobs, job_id, lambda job: job.status == "active" and job.progress.processed >= 1, within=START)
    first.signal(signal.SIGKILL)
    await first.exit_code(10)

    await asyncio.sleep(HEARTBEAT + 0.5)
    second = spawn_worker()
    given_up = await wait_for(jobs, job_id, lambda job: job.status != "active", within=START)

    assert given_up.status == "aborted", given_up
    assert given_up.error == "The worker running this job stopped."
    assert given_up.finished_at is not None
    assert given_up.attempts == 1
    assert (await saq_job(jobs, job_id)).status.value == "aborted"
    await stop(second)


# --- a stopped worker ---------------------------------------------------------------------------


async def test_a_stopped_worker_finishes_a_job_that_ends_within_the_shutdown_timeout(
    backend: str, jobs: Jobs, spawn_worker: SpawnWorker
) -> None:
    grace = 4
    job_id = (await jobs.submit("test_count_to", SURVIVES, OWNER, total=4, step=0.4)).id
    worker = spawn_worker(SHUTDOWN_TIMEOUT=str(grace))
    await wait_for(jobs, job_id, lambda job: job.status == "active" and job.progress.processed >= 1, within=START)

    sent = worker.signal(signal.SIGTERM)
    assert await worker.exit_code(grace + 10) == 0, worker.output
    assert time.monotonic() - sent < grace + 5

    done = await jobs.read(job_id)
    assert done.status == "complete", done
    assert done.attempts == 1
    assert (done.progress.processed, done.progress.total) == (4, 4)
    assert "Traceback" not in worker.output


async def test_a_stopped_worker_requeues_a_longer_job_and_the_next_worker_completes_it(
    backend: str, jobs: Jobs, spawn_worker: SpawnWorker
) -> None:
    job_id = (await jobs.submit("test_count_to", SURVIVES, OWNER, total=16, step=0.25)).id
    first = spawn_worker(SHUTDOWN_TIMEOUT="1")
    await wait_for(jobs, job_id, lambda job: job.status == "active" and job.progress.processed >= 2, within=START)

    sent = first.signal(signal.SIGTERM)
    assert await first.exit_code(15) == 0, first.output
    assert time.monotonic() - sent < 1 + 5, "the worker stops soon after its shutdown timeout"
    requeued = await jobs.read(job_id)
    assert requeued.status == "queued", requeued
    assert requeued.attempts == 1
    assert requeued.error == "cancelled"
    assert (requeued.started_at, requeued.finished_at) == (None, None)
    assert requeued.progress.processed < 16

    second = spawn_worker()
    done = await wait_for_status(jobs, job_id, "complete", within=START)
    assert done.attempts == 2
    assert (done.progress.processed, done.progress.total) == (16, 16)
    assert done.error is None
    await stop(second)


# --- logs ---------------------------------------------------------------------------------------


async def test_a_jobs_log_lines_carry_its_id_task_and_attempt(
    backend: str, jobs: Jobs, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker()
    job_id = (await jobs.submit("test_flaky", QUICK, OWNER, failures=1)).id
    other = (await jobs.submit("test_noop", QUICK, OWNER)).id
    await wait_for_status(jobs, job_id, "complete", within=START)
    await wait_for_status(jobs, other, "complete", within=START)
    await stop(worker)

    lines = json_lines(worker)
    mine = [line for line in lines if line.get("job_id") == str(job_id)]
    assert {line["task"] for line in mine} == {"test_flaky"}
    assert {line["attempt"] for line in mine} == {1, 2}

    told = [(line["attempt"], line["level"]) for line in mine if line["event"] == "flaky attempt"]
    assert told == [(1, "info"), (2, "info")], "the task's own lines are bound to the running attempt"
    (warning,) = [line for line in mine if line["event"] == "job attempt failed"]
    assert warning["attempt"] == 1
    assert warning["level"] == "warning"
    assert warning["error"] == "ValueError: flaky attempt 1 failed"

    theirs = [line for line in lines if line.get("job_id") == str(other)]
    assert theirs
    assert {(line["task"], line["attempt"]) for line in theirs} == {("test_noop", 1)}

    for line in lines:
        assert line["timestamp"].endswith("Z"), line
        if "job_id" in line:
            assert {"task", "attempt"} <= line.keys(), line
        if line["event"].startswith(("Worker starting", "Working shutting down")):
            assert "job_id" not in line, "a job's context does not outlive the job"


# --- the command line ---------------------------------------------------------------------------


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "accounts", "worker", *args],
        cwd=ROOT,
        env=environment | {"LOG_FORMAT": "json", **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_worker_help() -> None:
    result = run_cli("--help")

    assert result.returncode == 0, result.stderr
    assert "Run a job worker" in result.stdout
    assert "--concurrency" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_CONCURRENCY", "many"),
        ("SHUTDOWN_TIMEOUT", "soon"),
        ("DATABASE_URL", "mysql://root@127.0.0.1/accounts"),
        ("REDIS_URL", "not-a-url"),
    ],
)
def test_a_bad_setting_stops_the_worker_with_a_one_line_error(database_url: str, setting: str, value: str) -> None:
    result = run_cli(**{"DATABASE_URL": database_url, setting: value})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1, result.stderr
    assert setting in error, error


def test_a_bad_concurrency_option_is_a_usage_error(database_url: str) -> None:
    result = run_cli("--concurrency", "0", DATABASE_URL=database_url)

    assert result.returncode == 2
    assert "--concurrency" in result.stderr
    assert "Traceback" not in result.stderr
