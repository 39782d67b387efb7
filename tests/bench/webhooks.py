"""`make bench`, the webhook scenario (14; `tests.bench.run` calls it after the others), or alone:

    python -m tests.bench.webhooks [--rate 200] [--duration 10] [--redis]

Commit to webhook received: `accounts worker` (the PostgreSQL queue, or Redis with --redis) on a fresh bench
database with one endpoint for `user.*` at a local receiver (Python's threaded HTTP server, verifying nothing: the
receiving side is not measured). Writers commit `--rate` transactions a second, each recording one user.updated
event on a subject of its own (one of 50 users, in turn); the latency of each is from just after its COMMIT
returned to the moment the receiver read the delivery. Targets: p50 under 100 ms, p99 under 1 s at 200 writes/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from sqlalchemy.engine import make_url

from accounts.events.services import Subject, record_on
from tests.bench.jobs import REDIS_URL, start_worker, stop

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
SERVER_URL = os.environ.get("BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "accounts_bench_webhooks"
SUBJECTS = 50


class WebhookFigure(msgspec.Struct, kw_only=True):
    rate: int
    """Writes a second asked for."""
    achieved_rate: float
    writes: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    queue: str


class Arrivals:
    """The receiver's record: when each write's delivery first arrived (by the `n` in its data)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.lock = threading.Lock()

    def serve(self) -> ThreadingHTTPServer:
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                now = time.perf_counter()
                n = msgspec.json.decode(body)["data"]["n"]
                with arrivals.lock:
                    arrivals.at.setdefault(n, now)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


async def _prepare(dsn: str, url: str) -> None:
    from tests.database import migrate  # noqa: PLC0415 - the tests' helper, only when benchmarking

    connection = await asyncpg.connect(SERVER_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
    await migrate(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO webhooks (id, url, event_types, description, secret, enabled, consecutive_failures,"
            " created_at, updated_at) VALUES ($1, $2, ARRAY['user.*'], 'bench', $3, true, 0, now(), now())",
            uuid.uuid4(),
            url,
            os.urandom(32),
        )
    finally:
        await connection.close()


async def _write(dsn: str, rate: int, duration: float) -> tuple[dict[int, float], float]:
    """Commit `rate` events a second for `duration` seconds, on a few connections; returns when each commit
    returned (perf_counter) and the rate achieved."""
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
    users = [str(uuid.uuid4()) for _ in range(SUBJECTS)]
    committed: dict[int, float] = {}

    async def one(n: int) -> None:
        async with pool.acquire() as connection, connection.transaction():
            await record_on(connection, "user.updated", Subject("user", users[n % SUBJECTS]), {"n": n})
        committed[n] = time.perf_counter()

    started = time.perf_counter()
    tasks = []
    total = int(rate * duration)
    for n in range(total):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    await pool.close()
    return committed, total / elapsed


def measure_webhooks(rate: int = 200, duration: float = 10.0, *, redis: bool = False) -> WebhookFigure:
    arrivals = Arrivals()
    server = arrivals.serve()
    dsn = make_url(SERVER_URL).set(database=DATABASE).render_as_string(hide_password=False)
    asyncio.run(_prepare(dsn, f"http://127.0.0.1:{server.server_address[1]}/hook"))
    env = {name: value for name, value in os.environ.items() if name not in {"REDIS_URL", "QUEUE_NAME"}}
    env |= {
        "DATABASE_URL": dsn,
        "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "LOG_LEVEL": "WARNING",
        "WORKER_CONCURRENCY": "20",
        "QUEUE_NAME": "bench-webhooks",
        **({"REDIS_URL": REDIS_URL} if redis else {}),
    }
    RESULTS.mkdir(exist_ok=True)
    worker = start_worker(env, RESULTS / "webhooks-worker.log")
    try:
        time.sleep(3)  # the worker connects and its dispatcher catches up with the (empty) feed
        asyncio.run(_write(dsn, max(rate // 10, 1), 2.0))  # warm-up, not counted
        time.sleep(1)
        arrivals.at.clear()
        committed, achieved = asyncio.run(_write(dsn, rate, duration))
        deadline = time.monotonic() + 30
        while len(arrivals.at) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(worker)
        server.shutdown()
    latencies = sorted((arrivals.at[n] - at) * 1000 for n, at in committed.items() if n in arrivals.at)
    return WebhookFigure(
        rate=rate,
        achieved_rate=round(achieved, 1),
        writes=len(committed),
        received=len(latencies),
        p50_ms=round(statistics.median(latencies), 1) if latencies else float("nan"),
        p99_ms=round(latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else float("nan"),
        max_ms=round(latencies[-1], 1) if latencies else float("nan"),
        queue="redis" if redis else "postgres",
    )


def render(figure: WebhookFigure) -> str:
    return (
        "\n| 14 commit to webhook received | writes/s (asked, achieved) | received | p50 ms | p99 ms | max ms |\n"
        "|---|---|---|---|---|---|\n"
        f"| {figure.queue} queue | {figure.rate}, {figure.achieved_rate} | {figure.received} of {figure.writes} |"
        f" {figure.p50_ms} | {figure.p99_ms} | {figure.max_ms} |\n"
        "Targets: p50 under 100 ms, p99 under 1 s at 200 writes/s.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--redis", action="store_true", help="the job queue on Redis (BENCH_REDIS_URL)")
    args = parser.parse_args()
    figure = measure_webhooks(args.rate, args.duration, redis=args.redis)
    print(render(figure))


if __name__ == "__main__":
    main()
