"""`make bench`, the event scenarios (11-13; `tests.bench.run` calls them after the job scenarios).

Write cost (11): scenario 4 (PATCH a user, with a new bio each time, so that each records `user.updated`) and a
create (POST /api/v1/users, a new user per request, no password) with wrk against `accounts serve` with
EVENTS_ENABLED=true and =false, the two started in turn `--runs` times (median).
Target: with events at least 0.9x without.

Feed read (12): EVENTS_SEEDED events written straight into the bench database, then read in pages of 500, from
the start to the end, through EventFeed (asyncpg) and through GET /api/v1/events over HTTP. Target: 20,000
events/s.

Commit to subscriber (13): one `accounts serve` worker, SUBSCRIBERS idle SSE streams (raw sockets, one client
process), the worker's RSS before and after they connect (memory per idle subscriber); then events committed one
at a time at WRITE_RATE a second, each timed from its commit to its arrival on every stream. Target: p99 under
200 ms. The client reading 1,000 streams shares the 2 cores with the server and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, cast

import asyncpg
import msgspec
import psutil
import uvloop

from accounts.events.services import START, EventFeed, Subject, record_on
from tests.database import insert_api_key

if TYPE_CHECKING:
    from tests.bench.run import Bench, Report, Scenario, Server

EVENTS_SEEDED = 200_000
FEED_PAGE = 500
SUBSCRIBERS = 1000
WRITE_RATE = 20
WRITES = 100
CREATE_BODIES = 200_000


class WriteCostFigure(msgspec.Struct, kw_only=True):
    scenario: str
    with_events_rps: float
    without_events_rps: float
    ratio: float
    with_events_p99_ms: float
    without_events_p99_ms: float
    non_2xx: int
    cpu_us: tuple[float, float] = (0.0, 0.0)
    """The server's CPU per request, with events and without."""
    database_cpu_us: tuple[float, float] = (0.0, 0.0)
    """PostgreSQL's CPU per request (all its processes), with events and without."""


class FeedFigure(msgspec.Struct, kw_only=True):
    events: int
    service_events_per_second: float
    http_events_per_second: float


class StreamFigure(msgspec.Struct, kw_only=True):
    subscribers: int
    events: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mb_before: float
    rss_mb_after: float
    kb_per_idle_subscriber: float


class EventFigures(msgspec.Struct, kw_only=True):
    write_cost: list[WriteCostFigure] = msgspec.field(default_factory=list)
    feed: FeedFigure | None = None
    stream: StreamFigure | None = None


# --- write cost -------------------------------------------------------------------------------


def _create_bodies(path: Path, tag: str) -> None:
    encoder = msgspec.json.Encoder()
    lines = (
        encoder.encode({"email": f"ev-{tag}-{n}@bench.example", "username": f"ev-{tag}-{n}"}) + b"\n"
        for n in range(CREATE_BODIES)
    )
    path.write_bytes(b"".join(lines))


def measure_write_cost(bench: Bench) -> list[WriteCostFigure]:
    from tests.bench.run import SCENARIOS, Scenario, _cpu_seconds, _median, _wrk  # noqa: PLC0415 - run imports this

    # Scenario 4's PATCH, with a new bio each time: with the same bio, only a user's first PATCH changes anything,
    # and an unchanged user records no event.
    patch = dataclasses.replace(
        next(scenario for scenario in SCENARIOS if scenario.name.startswith("4 ")), body='{"bio": "benchmarked {n}"}'
    )
    create = Scenario(
        "11 POST /api/v1/users", "POST", "/api/v1/users", ("accounts",), bodies="create",
        content_type="application/json",
    )  # fmt: skip
    runs: dict[tuple[str, bool], list[dict[str, int]]] = {}
    for run in range(bench.args.runs):
        # Each run swaps which goes first: whatever the previous server's writes leave the database to do (a
        # checkpoint, autovacuum) falls on both alike.
        for enabled in (True, False) if run % 2 == 0 else (False, True):
            server = _start(bench, {"EVENTS_ENABLED": str(enabled).lower()})
            try:
                for scenario in (patch, create):
                    if run == 0:  # a warm-up, creating users of its own
                        warm_up = _wrk_env(bench, server, scenario, f"warm-up-{int(enabled)}")
                        _wrk(server.base, warm_up, duration=2, connections=bench.args.connections)
                    env = _wrk_env(bench, server, scenario, f"{run}{int(enabled)}")
                    before = _cpu_seconds(server.process.pid), _database_cpu_seconds()
                    result = _wrk(server.base, env, duration=bench.args.duration, connections=bench.args.connections)
                    result["cpu_us"] = round((_cpu_seconds(server.process.pid) - before[0]) * 1e6)
                    result["database_cpu_us"] = round((_database_cpu_seconds() - before[1]) * 1e6)
                    runs.setdefault((scenario.name, enabled), []).append(result)
            finally:
                server.stop()
    figures = []
    for scenario in (patch, create):
        with_events, without = _median(runs[scenario.name, True]), _median(runs[scenario.name, False])
        figures.append(
            WriteCostFigure(
                scenario=scenario.name,
                with_events_rps=with_events.rps,
                without_events_rps=without.rps,
                ratio=round(with_events.rps / without.rps, 3) if without.rps else 0.0,
                with_events_p99_ms=with_events.p99_ms,
                without_events_p99_ms=without.p99_ms,
                non_2xx=with_events.non_2xx + without.non_2xx,
                cpu_us=(with_events.cpu_us, without.cpu_us),
                database_cpu_us=tuple(  # type: ignore[arg-type]
                    round(statistics.median(r["database_cpu_us"] / max(r["requests"], 1) for r in runs[key]), 1)
                    for key in ((scenario.name, True), (scenario.name, False))
                ),
            )
        )
    return figures


def _database_cpu_seconds() -> float:
    """User and system CPU seconds so far of the local PostgreSQL's processes (0 when they cannot be read)."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] in {"postgres", "postmaster"} and process.info["cpu_times"] is not None:
            total += sum(process.info["cpu_times"][:2])
    return total


def _start(bench: Bench, extra: dict[str, str]) -> Server:
    from tests.bench.run import ROOT, Server, _free_port, _log_in, _wait_until_live  # noqa: PLC0415

    port = _free_port()
    command, env = bench.command("accounts", port)
    process = subprocess.Popen(command, cwd=ROOT, env=env | extra, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    _wait_until_live(base, process)
    return Server("accounts", base, process, 0.0, _log_in(base))


def _wrk_env(bench: Bench, server: Server, scenario: Scenario, tag: str) -> dict[str, str]:
    env = dict(os.environ) | {
        "BENCH_METHOD": scenario.method,
        "BENCH_PATH": scenario.path,
        "BENCH_ACCEPT": "application/json",
        "BENCH_CONTENT_TYPE": "application/json",
        "BENCH_TOKEN": server.token or "",
    }
    if scenario.body:
        env["BENCH_BODY"] = scenario.body
        env["BENCH_IDS_FILE"] = str(bench.ids_file)
    else:
        bodies = bench.workdir / f"create-{tag}.ndjson"
        _create_bodies(bodies, tag)
        env["BENCH_BODIES_FILE"] = str(bodies)
    return env


# --- feed read --------------------------------------------------------------------------------


async def _seed_events(dsn: str, count: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("TRUNCATE events")
        await connection.execute(
            "INSERT INTO events (type, subject_type, subject_id, actor_type, actor_id, request_id, data)"
            " SELECT 'user.updated', 'user', gen_random_uuid()::text, 'api_key', gen_random_uuid()::text,"
            " md5(n::text), jsonb_build_object('changes', jsonb_build_object('bio', 'benchmarked ' || n))"
            " FROM generate_series(1, $1) AS n",
            count,
        )
        await connection.execute("ANALYZE events")
    finally:
        await connection.close()


async def _read_feed(dsn: str) -> tuple[int, float]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        feed = EventFeed(pool)
        await feed.read(START, FEED_PAGE)  # warm-up: prepared statement
        started, cursor, read = time.perf_counter(), START, 0
        while True:
            batch = await feed.read(cursor, FEED_PAGE)
            read += len(batch.items)
            if len(batch.items) < FEED_PAGE:
                return read, time.perf_counter() - started
            cursor = batch.next
    finally:
        await pool.close()


async def _read_feed_http(base: str, key: str) -> tuple[int, float]:
    import httpx  # noqa: PLC0415

    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=60) as client:
        started, params, read = time.perf_counter(), {"limit": str(FEED_PAGE)}, 0
        while True:
            page = (await client.get("/api/v1/events", params=params)).raise_for_status().json()
            read += len(page["items"])
            if len(page["items"]) < FEED_PAGE:
                return read, time.perf_counter() - started
            params["after"] = page["next"]


def measure_feed(bench: Bench) -> FeedFigure:
    plain = bench.dsn.replace("postgresql+asyncpg://", "postgresql://")
    asyncio.run(_seed_events(plain, EVENTS_SEEDED))
    read, seconds = asyncio.run(_read_feed(plain))
    key = asyncio.run(insert_api_key(plain, ["events:read"]))
    server = _start(bench, {})
    try:
        http_read, http_seconds = asyncio.run(_read_feed_http(server.base, key))
    finally:
        server.stop()
    if read != EVENTS_SEEDED or http_read != EVENTS_SEEDED:
        raise SystemExit(f"the feed gave {read} and {http_read} events of {EVENTS_SEEDED}")
    return FeedFigure(
        events=read,
        service_events_per_second=round(read / seconds),
        http_events_per_second=round(http_read / http_seconds),
    )


# --- commit to subscriber ---------------------------------------------------------------------


class _Stream(asyncio.Protocol):
    """One subscriber on a raw socket: the bytes as they arrive, each marked event timed against its commit. A
    protocol rather than a StreamReader: one client process reads all the streams on the 2 cores the server and
    PostgreSQL share, and a readline per line made the client the slowest part of what is measured."""

    MARKER = b'"mark":"'

    def __init__(self, subscribers: _Subscribers, request: bytes) -> None:
        self.subscribers, self.request = subscribers, request
        self.buffer = b""
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast("asyncio.WriteTransport", transport).write(self.request)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        self.buffer += data
        if not self.streaming:
            head, separator, self.buffer = self.buffer.partition(b"\r\n\r\n")
            if not separator:
                self.buffer = head
                return
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise SystemExit(f"a subscriber got {head[:80]!r}")
            self.streaming = True
            self.subscribers.connected += 1
        while (at := self.buffer.find(self.MARKER)) >= 0:
            end = self.buffer.find(b'"', at + len(self.MARKER))
            if end < 0:
                break
            mark = self.buffer[at + len(self.MARKER) : end].decode()
            self.subscribers.latencies.append(arrived - self.subscribers.committed[mark])
            self.buffer = self.buffer[end:]
        self.buffer = self.buffer[-len(self.MARKER) - 64 :]  # what may hold the start of a marker cut in two


class _Subscribers:
    """SUBSCRIBERS streams on raw sockets; each arrival of a marked event is timed against its commit."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.request = (
            f"GET /api/v1/events/stream HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self.committed: dict[str, float] = {}
        self.latencies: list[float] = []
        self.connected = 0
        self.transports: list[asyncio.BaseTransport] = []

    async def connect(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        expected = self.connected + count
        for _ in range(count):
            transport, _ = await loop.create_connection(lambda: _Stream(self, self.request), self.host, self.port)
            self.transports.append(transport)
        async with asyncio.timeout(60):  # a stream refused (not a 200) never counts as connected
            while self.connected < expected:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for transport in self.transports:
            transport.close()


async def _stream_scenario(dsn: str, base: str, key: str, worker_pid: int) -> StreamFigure:
    host, port = base.removeprefix("http://").split(":")
    worker = psutil.Process(worker_pid)
    subscribers = _Subscribers(host, int(port), key)
    await subscribers.connect(1)  # the worker's first stream: imports, the broadcaster's state
    await asyncio.sleep(1)
    before = worker.memory_info().rss
    await subscribers.connect(SUBSCRIBERS)
    await asyncio.sleep(2)
    after = worker.memory_info().rss
    connection = await asyncpg.connect(dsn)
    try:
        for _ in range(WRITES):
            mark = uuid.uuid4().hex
            subscribers.committed[mark] = time.perf_counter()  # set before: the commit's notification may win
            await record_on(connection, "user.updated", Subject("user", mark), {"mark": mark})
            subscribers.committed[mark] = time.perf_counter()
            await asyncio.sleep(1 / WRITE_RATE)
        deadline = time.monotonic() + 30
        while len(subscribers.latencies) < WRITES * SUBSCRIBERS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
        await subscribers.close()
    latencies = sorted(max(0.0, latency) * 1000 for latency in subscribers.latencies)
    if not latencies:
        raise SystemExit("no subscriber received an event")
    return StreamFigure(
        subscribers=SUBSCRIBERS,
        events=WRITES,
        received=len(latencies),
        p50_ms=round(statistics.median(latencies), 1),
        p99_ms=round(latencies[int(len(latencies) * 0.99) - 1], 1),
        max_ms=round(latencies[-1], 1),
        rss_mb_before=round(before / 2**20, 1),
        rss_mb_after=round(after / 2**20, 1),
        kb_per_idle_subscriber=round((after - before) / 1024 / SUBSCRIBERS, 1),
    )


def measure_stream(bench: Bench) -> StreamFigure:
    plain = bench.dsn.replace("postgresql+asyncpg://", "postgresql://")
    key = asyncio.run(insert_api_key(plain, ["events:read"]))
    server = _start(bench, {"WEB_CONCURRENCY": "1"})
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
        worker = next(child for child in children if "python" in child.name().lower() or "granian" in child.name())
        # uvloop: the client's own event loop should cost as little as the server's does.
        return uvloop.run(_stream_scenario(plain, server.base, key, worker.pid))
    finally:
        server.stop()


# --- the runner's hook ------------------------------------------------------------------------


def run_event_scenarios(bench: Bench, report: Report) -> None:
    """Scenarios 11-13, each with only its own server running (after the others have stopped)."""
    wanted = bench.args.scenario
    figures = EventFigures()
    if not wanted or "11" in wanted:
        figures.write_cost = measure_write_cost(bench)
        print(f"  events write cost: {figures.write_cost}", flush=True)
    if not wanted or "12" in wanted:
        figures.feed = measure_feed(bench)
        print(f"  events feed: {figures.feed}", flush=True)
    if not wanted or "13" in wanted:
        figures.stream = measure_stream(bench)
        print(f"  events stream: {figures.stream}", flush=True)
    report.events = figures


def render(figures: EventFigures | None) -> str:
    if figures is None:
        return ""
    lines = ["", "Events (scenarios 11-13):", ""]
    if figures.write_cost:
        lines += [
            "| writes | with events req/s | without req/s | ratio (target >= 0.90) | p99 ms with / without "
            "| server CPU us/req with / without | PostgreSQL CPU us/req with / without |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {f.scenario} | {f.with_events_rps:.0f} | {f.without_events_rps:.0f} | {f.ratio:.2f} |"
            f" {f.with_events_p99_ms} / {f.without_events_p99_ms} | {f.cpu_us[0]:.0f} / {f.cpu_us[1]:.0f} |"
            f" {f.database_cpu_us[0]:.0f} / {f.database_cpu_us[1]:.0f} |"
            for f in figures.write_cost
        ]
    if (feed := figures.feed) is not None:
        lines += [
            "",
            f"Feed, pages of {FEED_PAGE} over {feed.events:,} events: {feed.service_events_per_second:,} events/s"
            f" through EventFeed, {feed.http_events_per_second:,} events/s through GET /api/v1/events (target 20,000).",
        ]
    if figures.stream is not None:
        s = figures.stream
        lines += [
            "",
            f"Commit to SSE subscriber, {s.subscribers:,} streams on one worker, {s.events} events at {WRITE_RATE}/s:"
            f" p50 {s.p50_ms} ms, p99 {s.p99_ms} ms, max {s.max_ms} ms ({s.received:,} arrivals; target p99 < 200"
            f" ms). Worker RSS {s.rss_mb_before} -> {s.rss_mb_after} MB: {s.kb_per_idle_subscriber} KB per idle"
            " subscriber.",
        ]
    return "\n".join(lines) + "\n"
