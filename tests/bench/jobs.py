"""`make bench`, the job scenarios (6 and 7; `tests.bench.run` calls them after the HTTP scenarios).

Import (6): `accounts serve` and `accounts worker` (the PostgreSQL queue, as deployed by default) on the bench
database; `--rows` generated users without passwords as NDJSON, posted to `POST /api/v1/users/imports`
and timed until the job is complete, then the same file again (every row a duplicate). Target: 100,000
rows in under 10 s.

Job path (7): no-op jobs through `Jobs.submit` (the job's owner and kind in its SAQ meta) and
`accounts.worker.make_worker` (its hooks: logging context, metrics, the fence's release) against no-op jobs
enqueued on bare SAQ with a bare `Worker`; both on Redis, same concurrency, submitted 100 at a time, timed
from the first submission to the last completion, the two taken in turn `--runs` times (median). Target: at
least 0.8x bare SAQ.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from redis.asyncio import Redis
from saq import Queue, Worker

from accounts import worker as accounts_worker
from accounts.config import Settings
from accounts.jobs.services import Jobs, JobSpec, WorkerContext

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = 10
BATCH = 100
NOOP_SPEC = JobSpec(timeout=10, retries=1)


class ImportFigure(msgspec.Struct, kw_only=True):
    rows: int
    seconds: float
    rows_per_second: float
    rerun_seconds: float
    upload_seconds: float


class QueueFigure(msgspec.Struct, kw_only=True):
    jobs: int
    saq_jobs_per_second: float
    ours_jobs_per_second: float
    ratio: float


# --- import -------------------------------------------------------------------------------------


def import_file(path: Path, rows: int) -> None:
    encoder = msgspec.json.Encoder()
    with path.open("wb") as file:
        for first in range(0, rows, 10_000):
            file.write(
                encoder.encode_lines(
                    [
                        {"email": f"import{n}@bench.example", "username": f"import{n}", "full_name": f"Imported {n}"}
                        for n in range(first, min(first + 10_000, rows))
                    ]
                )
            )


def measure_import(env: dict[str, str], workdir: Path, base: str, token: str, rows: int) -> ImportFigure:
    """Start `accounts worker` with the server's `env`, warm it up with a one-row import, then time an
    import of `rows` new users (and a second run of the same file)."""
    path = workdir / "import.ndjson"
    import_file(path, rows)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    worker = start_worker(env, RESULTS / "worker.log")
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            warm_up = b'{"email": "warm-up@bench.example", "username": "warm-up"}\n'
            _wait(client, client.post("/api/v1/users/imports", content=warm_up).raise_for_status().json()["id"], worker)
            timings = []
            for _ in range(2):
                started = time.perf_counter()
                response = client.post("/api/v1/users/imports", content=path.read_bytes())
                response.raise_for_status()
                uploaded = time.perf_counter() - started
                job = _wait(client, response.json()["id"], worker)
                timings.append((time.perf_counter() - started, uploaded, job))
    finally:
        stop(worker)
    (seconds, uploaded, job), (rerun, _, again) = timings
    if job["status"] != "complete" or job["progress"]["failed"] or again["status"] != "complete":
        raise SystemExit(f"the import did not complete cleanly: {job} / {again}")
    return ImportFigure(
        rows=rows,
        seconds=round(seconds, 2),
        rows_per_second=round(rows / seconds),
        rerun_seconds=round(rerun, 2),
        upload_seconds=round(uploaded, 2),
    )


def _wait(client: httpx.Client, job_id: str, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with {worker.returncode}; see its log, worker.log")
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ("complete", "failed", "aborted"):
            return job
        time.sleep(0.02)
    raise SystemExit(f"job {job_id} did not finish")


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    env = env | {"WORKER_METRICS_PORT": "0"}  # no metrics listener to collide with another worker's
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "accounts", "worker"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


# --- our job path against bare SAQ --------------------------------------------------------------


async def noop(_: Any, **__: Any) -> None:
    """A job that does nothing: what is measured is the queue and the path around it."""


async def _drain(worker: Worker[Any], count: int, submit: Callable[[], Awaitable[object]]) -> float:
    """Jobs/s: `count` submissions, `BATCH` at a time, while `worker` runs them; until the last is done."""
    finished = 0
    all_done = asyncio.Event()

    async def counted(_: Any) -> None:
        nonlocal finished
        finished += 1
        if finished == count:
            all_done.set()

    worker.after_process = [*(worker.after_process or []), counted]
    worker.SIGNALS = []
    running = asyncio.create_task(worker.start())
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(*(submit() for _ in range(min(BATCH, count - first))))
    await asyncio.wait_for(all_done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    running.cancel()
    await running
    return count / elapsed


async def bare_saq(count: int) -> float:
    queue = Queue.from_url(REDIS_URL, name=f"bench-saq-{uuid.uuid4().hex[:8]}")
    await queue.connect()
    try:
        worker: Worker[Any] = Worker(queue, functions=[("noop", noop)], concurrency=CONCURRENCY)
        return await _drain(worker, count, lambda: queue.enqueue("noop", timeout=10))
    finally:
        await _forget(queue)


async def our_path(count: int, dsn: str) -> float:
    settings = Settings(
        database_url=dsn,
        redis_url=REDIS_URL,
        queue_name=f"bench-ours-{uuid.uuid4().hex[:8]}",
        worker_concurrency=CONCURRENCY,
        shutdown_timeout=1,
    )
    accounts_worker.TASKS["bench_noop"] = noop
    queue, worker_queue = accounts_worker.make_queue(settings), accounts_worker.make_queue(settings)
    jobs = Jobs(queue, settings.job_result_ttl)
    await worker_queue.connect()
    try:
        worker: Worker[WorkerContext] = accounts_worker.make_worker(settings, worker_queue)
        worker.cron_jobs = []  # only the no-ops
        return await _drain(worker, count, lambda: jobs.submit("bench_noop", NOOP_SPEC, "user:bench"))
    finally:
        await _forget(queue)
        await _forget(worker_queue)
        del accounts_worker.TASKS["bench_noop"]


async def _forget(queue: Queue) -> None:
    """Disconnect, and delete the queue's keys so a shared Redis is left as it was."""
    await queue.disconnect()
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"saq:*{queue.name}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def measure_queue(dsn: str, count: int, runs: int) -> QueueFigure:
    saq_rates: list[float] = []
    our_rates: list[float] = []
    await bare_saq(min(count, 500))  # warm-up: connections, imports, Redis
    await our_path(min(count, 500), dsn)
    for _ in range(runs):
        saq_rates.append(await bare_saq(count))
        our_rates.append(await our_path(count, dsn))
        print(f"  no-op jobs/s: bare SAQ {saq_rates[-1]:.0f}, ours {our_rates[-1]:.0f}", flush=True)
    saq, ours = statistics.median(saq_rates), statistics.median(our_rates)
    return QueueFigure(
        jobs=count, saq_jobs_per_second=round(saq), ours_jobs_per_second=round(ours), ratio=round(ours / saq, 2)
    )


async def redis_answers() -> bool:
    redis = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        return bool(await redis.ping())
    except OSError:
        return False
    finally:
        await redis.aclose()


def render(imported: ImportFigure | None, queued: QueueFigure | None) -> str:
    lines = ["", "| job scenario | figure | target |", "|---|---|---|"]
    if imported is not None:
        lines += [
            f"| 6 import {imported.rows:,} users (NDJSON, no passwords), POST to job complete "
            f"| {imported.seconds} s = {imported.rows_per_second:,} rows/s (upload {imported.upload_seconds} s) "
            "| < 10 s |",
            f"| 6r the same file again (every row a duplicate, skipped) | {imported.rerun_seconds} s | - |",
        ]
    if queued is not None:
        lines.append(
            f"| 7 no-op jobs on Redis, {queued.jobs:,} per run: ours / bare SAQ "
            f"| {queued.ours_jobs_per_second} / {queued.saq_jobs_per_second} jobs/s = {queued.ratio}x | >= 0.8x |"
        )
    return "\n".join(lines) + "\n"
