"""Test-only SAQ tasks, registered in `accounts.worker.TASKS` by the tests (never by src).

Each takes `job_id` (as `Jobs.submit` passes it); those that report run as a `job_task`, as a production
task would. `ATTEMPTS` and `GATES` only work in-process (the worker runs on the test's event loop).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import structlog

from accounts.jobs.services import JobRun, JobSpec, WorkerContext, job_task

log = structlog.get_logger("tests.jobs")

ATTEMPTS: defaultdict[str, list[float]] = defaultdict(list)
"""Per job id, the `time.monotonic()` at which each attempt started."""
GATES: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
"""Per job id, what a `hold` run waits for after its first step."""
CANCELLED: set[str] = set()
"""Job ids whose `count_to` run was cancelled (by an abort, a timeout or a stopping worker)."""
FAILURE = "the frobnicator is out of order"


@job_task
async def count_to(run: JobRun, *, job_id: str, total: int, step: float = 0.0, hold: bool = False) -> int:
    """Report progress `1..total` of `total`, `step` seconds apart; with `hold`, wait at 1 for `GATES[job_id]`."""
    ATTEMPTS[job_id].append(time.monotonic())
    log.info("counting", total=total)
    try:
        for processed in range(1, total + 1):
            await run.report(processed=processed, total=total, failed=processed // 2)
            if hold and processed == 1:
                await GATES[job_id].wait()
            if step:
                await asyncio.sleep(step)
    except asyncio.CancelledError:
        CANCELLED.add(job_id)
        raise
    log.info("counted", total=total)
    return total


@job_task
async def flaky(run: JobRun, *, job_id: str, failures: int) -> str:
    """Fail the first `failures` attempts, then succeed."""
    ATTEMPTS[job_id].append(time.monotonic())
    attempt = run.job.attempts
    log.info("flaky attempt", failures=failures)
    if attempt <= failures:
        raise ValueError(f"flaky attempt {attempt} failed")
    await run.report(processed=1, total=1)
    return "done"


async def always_fails(ctx: WorkerContext, *, job_id: str, message: str = FAILURE) -> None:
    ATTEMPTS[job_id].append(time.monotonic())
    _fail_deep_down(3, message)


def _fail_deep_down(depth: int, message: str) -> None:
    """A traceback several frames deep: what the job's error summary must leave out."""
    if depth == 0:
        raise RuntimeError(message)
    _fail_deep_down(depth - 1, message)


async def noop(ctx: WorkerContext, *, job_id: str) -> None:
    ATTEMPTS[job_id].append(time.monotonic())


@job_task
async def write_result(run: JobRun, *, job_id: str, content: str, suffix: str, media_type: str) -> int:
    """Write `content` to the job's result file and keep it, as an export does."""
    ATTEMPTS[job_id].append(time.monotonic())
    path = run.result_file(suffix)
    path.write_text(content, encoding="utf-8")
    await run.keep_result(path, media_type)
    await run.report(processed=content.count("\n"), total=content.count("\n"))
    return len(content)


TEST_TASKS: dict[str, Any] = {
    "test_count_to": count_to,
    "test_flaky": flaky,
    "test_always_fails": always_fails,
    "test_noop": noop,
    "test_write_result": write_result,
}

QUICK = JobSpec(timeout=30, retries=3, retry_delay=0.05)
"""Retries with a negligible back-off: for tests that are not about the back-off."""
