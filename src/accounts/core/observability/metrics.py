"""Prometheus metrics: requests by route template, latency, in-flight requests, pools, queue, build.

Each API worker process counts its requests in plain dictionaries (about a microsecond a request;
prometheus_client's multiprocess mode costs ten) and writes a snapshot to METRICS_DIR every second.
`GET /metrics`, whichever worker answers it, adds up every worker's snapshot, its own live figures
first, so a scrape sees the whole server: counters include workers that have since exited, gauges
only live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version
from pathlib import Path

import asyncpg
import msgspec
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"  # requests no route took (404, 405): one label, not one per probed path
FLUSH_SECONDS = 1.0

log = structlog.get_logger("accounts.metrics")

PoolGauge = Callable[[], dict[str, int]]


class Snapshot(msgspec.Struct, array_like=True):
    """One worker's figures: counters since it started, gauges as they are now."""

    pid: int
    requests: list[tuple[str, str, str, int]] = msgspec.field(default_factory=list)
    """(method, route, status, count)"""
    durations: list[tuple[str, str, list[float]]] = msgspec.field(default_factory=list)
    """(method, route, [count per bucket..., count above the last bucket, sum of seconds])"""
    in_flight: int = 0
    pools: list[tuple[str, str, int]] = msgspec.field(default_factory=list)
    """(pool, state, connections)"""


class RequestMetrics:
    """This process's request figures, and the reader of every process's snapshots."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.in_flight = 0
        self.pools: dict[str, PoolGauge] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.durations.get((method, route))
        if counts is None:
            counts = self.durations[method, route] = [0.0] * (len(BUCKETS) + 2)
        counts[bisect_left(BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def snapshot(self) -> Snapshot:
        return Snapshot(
            pid=self.pid,
            requests=[(*key, count) for key, count in self.requests.items()],
            durations=[(*key, list(counts)) for key, counts in self.durations.items()],
            in_flight=self.in_flight,
            pools=[(name, state, value) for name, gauge in self.pools.items() for state, value in gauge().items()],
        )

    def write(self) -> None:
        """Publish this process's snapshot for the others (atomically: a reader never sees half a file)."""
        if self.directory is None:
            return
        path = self.directory / f"{self.pid}.snapshot"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(msgspec.msgpack.encode(self.snapshot()))
        temporary.replace(path)

    async def publish_forever(self) -> None:
        """Write the snapshot every FLUSH_SECONDS until cancelled, and once more on the way out."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                self.write()
        finally:
            with contextlib.suppress(OSError):
                self.write()

    def snapshots(self) -> Iterator[tuple[Snapshot, bool]]:
        """Every process's latest snapshot (this one live), and whether that process still runs."""
        yield self.snapshot(), True
        if self.directory is None:
            return
        decoder = msgspec.msgpack.Decoder(Snapshot)
        for path in self.directory.glob("*.snapshot"):
            try:
                snapshot = decoder.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError):
                continue  # being replaced or unreadable: the next scrape reads it
            if snapshot.pid != self.pid:
                yield snapshot, _running(snapshot.pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AccountsCollector(Collector):
    """Everything `GET /metrics` shows; `extra` adds figures read at scrape time (the queue)."""

    def __init__(self, metrics: RequestMetrics, extra: Iterable[Metric] = ()) -> None:
        self.metrics = metrics
        self.extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        requests: dict[tuple[str, ...], float] = {}
        durations: dict[tuple[str, ...], list[float]] = {}
        pools: dict[tuple[str, ...], float] = {}
        in_flight = workers = 0
        for snapshot, running in self.metrics.snapshots():
            for method, route, status, count in snapshot.requests:
                requests[method, route, status] = requests.get((method, route, status), 0) + count
            for method, route, counts in snapshot.durations:
                total = durations.setdefault((method, route), [0.0] * len(counts))
                for index, value in enumerate(counts):
                    total[index] += value
            if running:
                workers += 1
                in_flight += snapshot.in_flight
                for pool, state, value in snapshot.pools:
                    pools[pool, state] = pools.get((pool, state), 0) + value
        yield _counter("accounts_http_requests", "HTTP requests answered.", ["method", "route", "status"], requests)
        yield _histogram(durations)
        in_flight_family = GaugeMetricFamily("accounts_http_requests_in_flight", "HTTP requests being answered.")
        in_flight_family.add_metric([], in_flight)
        yield in_flight_family
        workers_family = GaugeMetricFamily("accounts_api_workers", "API worker processes whose figures are shown.")
        workers_family.add_metric([], workers)
        yield workers_family
        pool_family = GaugeMetricFamily(
            "accounts_db_pool_connections", "Database connections of the API workers' pools.", labels=["pool", "state"]
        )
        for labels, value in sorted(pools.items()):
            pool_family.add_metric(list(labels), value)
        yield pool_family
        build = GaugeMetricFamily("accounts_build_info", "The running version.", labels=["version", "python"])
        build.add_metric([version("accounts"), platform.python_version()], 1)
        yield build
        yield from self.extra


def _counter(name: str, help_text: str, labels: list[str], values: dict[tuple[str, ...], float]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _histogram(durations: dict[tuple[str, ...], list[float]]) -> Metric:
    family = HistogramMetricFamily(
        "accounts_http_request_duration_seconds",
        "Time to answer HTTP requests, from the first byte in to the last byte out.",
        labels=["method", "route"],
    )
    for key, counts in sorted(durations.items()):
        cumulative, buckets = 0.0, []
        for bound, count in zip((*BUCKETS, float("inf")), counts[:-1], strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric(list(key), buckets, sum_value=counts[-1])
    return family


def registry_for(metrics: RequestMetrics, extra: Iterable[Metric] = ()) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AccountsCollector(metrics, extra))
    return registry


def asyncpg_pool_use(pool: asyncpg.Pool) -> PoolGauge:
    def use() -> dict[str, int]:
        idle = pool.get_idle_size()
        return {"in_use": pool.get_size() - idle, "idle": idle, "max": pool.get_max_size()}

    return use


def sqlalchemy_pool_use(engine: AsyncEngine, most: int) -> PoolGauge:
    pool = engine.sync_engine.pool

    def use() -> dict[str, int]:
        if not isinstance(pool, QueuePool):
            return {}
        return {"in_use": pool.checkedout(), "idle": pool.checkedin(), "max": most}

    return use
