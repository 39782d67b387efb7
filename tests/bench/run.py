"""`make bench`: Accounts against its ceiling and its peer, side by side, with wrk over loopback.

    python -m tests.bench.run [--users 100000] [--duration 5] [--runs 3] [--connections 64]

Seeds a bench database, then for each server (Accounts on granian, the bare-Litestar/asyncpg ceiling on
granian, the FastAPI peer on uvicorn; two workers each) measures start-to-ready time, every scenario it
serves (a warm-up, then `--runs` measured runs; the median is reported) and RSS per worker. Writes
tests/bench/results/latest.{md,json} and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nacl.pwhash
import psutil
from advanced_alchemy.alembic.commands import AlembicCommands
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from accounts.config import Settings
from accounts.core.db import sqlalchemy_config
from accounts.core.passwords import HASHER
from tests.bench.events import EventFigures, run_event_scenarios
from tests.bench.events import render as render_events
from tests.bench.jobs import ImportFigure, QueueFigure, measure_import, measure_queue, redis_answers
from tests.bench.jobs import render as render_jobs
from tests.bench.seed import seed_users
from tests.bench.webhooks import WebhookFigure, measure_webhooks
from tests.bench.webhooks import render as render_webhooks

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "scenario.lua"
WRK_THREADS = 2
"""wrk threads per run (each its own share of a bodies file)."""
SERVER_URL = os.environ.get("BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_DATABASE = "accounts_bench"
ADMIN_EMAIL = "bench-admin@bench.example"
ADMIN_PASSWORD = "bench password 1"
LOGIN_ACCOUNTS = 1000
"""Accounts the login scenario spreads over, as real sign-ins are: one account's attempts in progress are
bounded by LOGIN_MAX_FAILURES_PER_ACCOUNT, so 64 connections on one account would mostly measure 429s."""
WORKERS = 2
SERVERS_CONNECTIONS = WORKERS * ((8 + 8 + 2 + 1 + 2) + 10 + (10 + 5))
"""The most connections the three servers open together: Accounts' two pools, listener and queue pool, the
ceiling's pool and the peer's (see `Bench.command`)."""


GRANT_CLIENT = (uuid.UUID("0193a5f0-0000-7000-8000-00000000c11e"), "accs_bench-grant-client-secret-000000000000000")
INTROSPECTING_CLIENT = (
    uuid.UUID("0193a5f0-0000-7000-8000-0000000017e5"),
    "accs_bench-introspector-secret-00000000000000",
)
BATCH_SIZE = 100


def _basic(client: tuple[uuid.UUID, str]) -> str:
    return "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    path: str
    targets: tuple[str, ...]
    authenticated: bool = True
    body: str | None = None
    bodies: str | None = None
    """Each request's body is a random line of this file of the bench's: `logins` (the password grant of one of
    LOGIN_ACCOUNTS accounts) or `batches` (a batch-get of BATCH_SIZE random ids)."""
    authorization: str | None = None
    """The Authorization header of every request (a client's HTTP Basic), instead of the admin's token."""
    introspects: bool = False
    """The body is `token=<the server's admin access token>`: what an introspecting client sends."""
    content_type: str | None = None
    accept: str = "application/json"


SCENARIOS = (
    Scenario("1 GET /health/live", "GET", "/health/live", ("accounts", "ceiling", "peer"), authenticated=False),
    Scenario("2 GET /api/v1/users/{id}", "GET", "/api/v1/users/{id}", ("accounts", "ceiling", "peer")),
    Scenario(
        "2m GET /api/v1/users/{id} as MessagePack",
        "GET",
        "/api/v1/users/{id}",
        ("accounts", "ceiling"),
        accept="application/msgpack",
    ),
    Scenario(
        "3 GET /api/v1/users?limit=20&sort=-created_at",
        "GET",
        "/api/v1/users?limit=20&sort=-created_at",
        ("accounts", "ceiling", "peer"),
    ),
    Scenario(
        "4 PATCH /api/v1/users/{id}",
        "PATCH",
        "/api/v1/users/{id}",
        ("accounts", "ceiling", "peer"),
        body='{"bio": "benchmarked"}',
        content_type="application/json",
    ),
    Scenario(
        "5 POST /api/v1/auth/token",
        "POST",
        "/api/v1/auth/token",
        ("accounts", "peer"),
        authenticated=False,
        bodies="logins",
        content_type="application/x-www-form-urlencoded",
    ),
    Scenario(
        "8 POST /api/v1/auth/token client credentials",
        "POST",
        "/api/v1/auth/token",
        ("accounts", "ceiling"),
        authenticated=False,
        body="grant_type=client_credentials",
        content_type="application/x-www-form-urlencoded",
        authorization=_basic(GRANT_CLIENT),
    ),
    Scenario(
        "9 POST /api/v1/auth/introspect",
        "POST",
        "/api/v1/auth/introspect",
        ("accounts",),
        authenticated=False,
        introspects=True,
        content_type="application/x-www-form-urlencoded",
        authorization=_basic(INTROSPECTING_CLIENT),
    ),
    Scenario(
        f"10 POST /api/v1/users/batch-get {BATCH_SIZE} ids",
        "POST",
        "/api/v1/users/batch-get",
        ("accounts",),
        bodies="batches",
        content_type="application/json",
    ),
)
SINGLE_READ, BATCH_READ = SCENARIOS[1].name, SCENARIOS[-1].name


class Figure(msgspec.Struct, kw_only=True):
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_us: float = 0.0
    """CPU time the server's processes spent per request (user and system, all workers): unlike req/s, not moved
    by what wrk and PostgreSQL take of the shared cores."""
    non_2xx_statuses: dict[str, int] = msgspec.field(default_factory=dict)
    """Accounts only (from its /metrics): the non-2xx answers of the measured runs by status."""


class ServerResult(msgspec.Struct, kw_only=True):
    ready_seconds: float
    rss_mb_per_worker: list[float]
    scenarios: dict[str, Figure] = msgspec.field(default_factory=dict)


class Report(msgspec.Struct, kw_only=True):
    users: int
    duration: int
    runs: int
    connections: int
    hash_ms: dict[str, float]
    servers: dict[str, ServerResult] = msgspec.field(default_factory=dict)
    imports: ImportFigure | None = None
    queue: QueueFigure | None = None
    webhooks: WebhookFigure | None = None
    events: EventFigures | None = None


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    dsn: str = ""
    ids_file: Path = field(default_factory=Path)
    bodies_files: dict[str, Path] = field(default_factory=dict)
    key_file: Path = field(default_factory=Path)
    public_key_file: Path = field(default_factory=Path)
    deployed_python: Path = field(default_factory=Path)

    def prepare(self) -> None:
        self.dsn = make_url(SERVER_URL).set(database=BENCH_DATABASE).render_as_string(hide_password=False)
        asyncio.run(_recreate_database(SERVER_URL, BENCH_DATABASE))
        if (free := asyncio.run(_free_connections(SERVER_URL))) < SERVERS_CONNECTIONS:
            print(
                f"warning: PostgreSQL has {free} connections free, the servers may open {SERVERS_CONNECTIONS}:"
                " expect 503s from whichever asks last (stop other clients or raise max_connections)",
                flush=True,
            )
        AlembicCommands(sqlalchemy_config(Settings(database_url=self.dsn))).upgrade()
        self.deployed_python = _deployed_environment(self.workdir / "venv")
        started = time.perf_counter()
        ids = asyncio.run(seed_users(self.dsn, self.args.users))
        asyncio.run(_insert_admin(self.dsn))
        logins = asyncio.run(_insert_login_accounts(self.dsn))
        asyncio.run(_insert_clients(self.dsn))
        print(f"seeded {len(ids):,} users with COPY in {time.perf_counter() - started:.1f} s", flush=True)
        self.ids_file = self.workdir / "ids.txt"
        sample = ids[:: max(1, len(ids) // 20_000)]
        self.ids_file.write_text("\n".join(sample) + "\n")
        batches = [msgspec.json.encode({"ids": random.sample(sample, BATCH_SIZE)}).decode() for _ in range(500)]
        for name, lines in (("logins", logins), ("batches", batches)):
            self.bodies_files[name] = self.workdir / f"{name}.txt"
            self.bodies_files[name].write_text("".join(f"{line}\n" for line in lines))
        key = Ed25519PrivateKey.generate()
        self.key_file = self.workdir / "signing.pem"
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.public_key_file = self.workdir / "signing.pub.pem"
        self.public_key_file.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def command(self, target: str, port: int) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        plain = self.dsn.replace("postgresql+asyncpg://", "postgresql://")
        if target == "accounts":
            env |= {
                "DATABASE_URL": plain,
                "PORT": str(port),
                "WEB_CONCURRENCY": str(WORKERS),
                "LOG_LEVEL": "WARNING",
                "ACCESS_LOG": "false",
                "LOG_FORMAT": "json",
                "JWT_SIGNING_KEY_FILE": str(self.key_file),
                "LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
                # Two pools of 8 (+2 overflow) a worker, with the ceiling's 10 and the peer's 15 a worker, stay
                # within PostgreSQL's default 100 connections; past it, whoever asks last gets errors (503s).
                "DATABASE_POOL_SIZE": "8",
                "DATABASE_MAX_OVERFLOW": "2",
                "DATA_DIR": str(self.workdir / "data"),  # shared with the import scenario's worker
            }
            return [str(self.deployed_python), "-m", "accounts", "serve"], env
        if target == "ceiling":
            env |= {
                "BENCH_DSN": plain,
                "BENCH_PRIVATE_KEY_FILE": str(self.key_file),
                "BENCH_CLIENT_SECRET": GRANT_CLIENT[1],
            }
            return [
                sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--workers", str(WORKERS),
                "--port", str(port), "--log-level", "warning", "--factory", "tests.bench.ceiling:create_app",
            ], env  # fmt: skip
        env |= {
            "BENCH_SQLALCHEMY_URL": plain.replace("postgresql://", "postgresql+asyncpg://", 1),
            "BENCH_PUBLIC_KEY_FILE": str(self.public_key_file),
            "BENCH_PRIVATE_KEY_FILE": str(self.key_file),
        }
        return [
            sys.executable, "-m", "uvicorn", "tests.bench.peer.app:app", "--workers", str(WORKERS), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning", "--port", str(port),
        ], env  # fmt: skip

    def start(self, target: str) -> Server:
        port = _free_port()
        command, env = self.command(target, port)
        base = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        _wait_until_live(base, process)
        ready = time.perf_counter() - started
        return Server(target, base, process, round(ready, 2), _log_in(base) if target != "ceiling" else None)

    def measure(self, servers: list[Server], scenario: Scenario) -> dict[str, Figure]:
        """Warm every server up, then take the runs in turn (A, B, C, A, B, C, ...) so that drift in the
        machine or the database weighs on all of them alike."""
        env = dict(os.environ) | {
            "BENCH_METHOD": scenario.method,
            "BENCH_PATH": scenario.path,
            "BENCH_ACCEPT": scenario.accept,
        }
        if "{id}" in scenario.path:
            env["BENCH_IDS_FILE"] = str(self.ids_file)
        if scenario.body:
            env["BENCH_BODY"] = scenario.body
        if scenario.bodies:
            env["BENCH_BODIES_FILE"] = str(self.bodies_files[scenario.bodies])
        if scenario.authorization:
            env["BENCH_AUTHORIZATION"] = scenario.authorization
        if scenario.content_type:
            env["BENCH_CONTENT_TYPE"] = scenario.content_type
        targets = [server for server in servers if server.target in scenario.targets]
        runs: dict[str, list[dict[str, int]]] = {server.target: [] for server in targets}
        for server in targets:
            _wrk(server.base, server.env_for(scenario, env), duration=2, connections=self.args.connections)
        answered_before = {server.target: _non_2xx_answers(server) for server in targets}
        for _ in range(self.args.runs):
            for server in targets:
                server_env = server.env_for(scenario, env)
                before = _cpu_seconds(server.process.pid)
                result = _wrk(server.base, server_env, duration=self.args.duration, connections=self.args.connections)
                result["cpu_us"] = round((_cpu_seconds(server.process.pid) - before) * 1e6)
                runs[server.target].append(result)
        figures = {target: _median(results) for target, results in runs.items()}
        for server in targets:
            after = _non_2xx_answers(server)
            figures[server.target].non_2xx_statuses = {
                status: count - answered_before[server.target].get(status, 0)
                for status, count in after.items()
                if count > answered_before[server.target].get(status, 0)
            }
        return figures


@dataclass
class Server:
    target: str
    base: str
    process: subprocess.Popen[bytes]
    ready_seconds: float
    token: str | None

    def env_for(self, scenario: Scenario, env: dict[str, str]) -> dict[str, str]:
        if scenario.introspects and self.token:
            return env | {"BENCH_BODY": f"token={self.token}"}
        return env | {"BENCH_TOKEN": self.token} if scenario.authenticated and self.token else env

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of the process and its children (a server's workers) so far."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def _median(runs: list[dict[str, int]]) -> Figure:
    return Figure(
        cpu_us=round(statistics.median(r.get("cpu_us", 0) / max(r["requests"], 1) for r in runs), 1),
        rps=round(statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in runs), 1),
        p50_ms=round(statistics.median(r["p50_us"] for r in runs) / 1000, 2),
        p99_ms=round(statistics.median(r["p99_us"] for r in runs) / 1000, 2),
        non_2xx=sum(r["non_2xx"] for r in runs),
        socket_errors=sum(r["socket_errors"] for r in runs),
    )


async def _recreate_database(server_url: str, name: str) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _free_connections(server_url: str) -> int:
    connection = await asyncpg.connect(server_url)
    try:
        free: int = await connection.fetchval(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
    finally:
        await connection.close()
    return free


async def _insert_admin(dsn: str) -> None:
    connection = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(
            "INSERT INTO users (id, email, username, hashed_password, is_active, is_superuser, token_version,"
            " created_at, updated_at) VALUES (gen_random_uuid(), $1, 'bench-admin', $2, true, true, 0, now(), now())",
            ADMIN_EMAIL,
            HASHER.hash(ADMIN_PASSWORD),
        )
    finally:
        await connection.close()


async def _insert_login_accounts(dsn: str) -> list[str]:
    """LOGIN_ACCOUNTS active users with the admin's password (one argon2 hash: a hash is per password, not per
    user, as far as verifying goes); returns the form body that logs each in."""
    hashed = HASHER.hash(ADMIN_PASSWORD)
    rows = [(uuid.uuid4(), f"bench-login-{n}@bench.example", f"bench-login-{n}", hashed) for n in range(LOGIN_ACCOUNTS)]
    connection = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.executemany(
            "INSERT INTO users (id, email, username, hashed_password, is_active, is_superuser, token_version,"
            " created_at, updated_at) VALUES ($1, $2, $3, $4, true, false, 0, now(), now())",
            rows,
        )
    finally:
        await connection.close()
    password = ADMIN_PASSWORD.replace(" ", "+")
    return [f"grant_type=password&username={email}&password={password}" for _, email, _, _ in rows]


async def _insert_clients(dsn: str) -> None:
    """The service clients of scenarios 8 (it asks for tokens) and 9 (it introspects them)."""
    connection = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.executemany(
            "INSERT INTO oauth_clients (id, name, scopes, secret_hash, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, now(), now())",
            [
                (GRANT_CLIENT[0], "bench-grant", ["users:read"], hashlib.sha256(GRANT_CLIENT[1].encode()).digest()),
                (
                    INTROSPECTING_CLIENT[0],
                    "bench-introspector",
                    ["tokens:introspect"],
                    hashlib.sha256(INTROSPECTING_CLIENT[1].encode()).digest(),
                ),
            ],
        )
    finally:
        await connection.close()


def _non_2xx_answers(server: Server) -> dict[str, int]:
    """How many non-2xx answers Accounts has given so far, by status, from its own /metrics (the other servers
    have none; wrk only counts them)."""
    if server.target != "accounts":
        return {}
    time.sleep(1.2)  # each worker publishes its counts every second
    answered: dict[str, int] = {}
    metrics = httpx.get(f"{server.base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(metrics):
        if family.name == "accounts_http_requests":
            for sample in family.samples:
                status = sample.labels.get("status", "")
                if sample.name.endswith("_total") and not status.startswith("2"):
                    answered[status] = answered.get(status, 0) + int(sample.value)
    return answered


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_until_live(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{base} did not become live")


def _log_in(base: str) -> str:
    form = {"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    response = httpx.post(f"{base}/api/v1/auth/token", data=form, timeout=10)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def _wrk(base: str, env: dict[str, str], *, duration: int, connections: int) -> dict[str, int]:
    output = subprocess.run(  # noqa: S603
        ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",  # noqa: S607
         "-s", str(WRK_SCRIPT), base],
        env=env | {"BENCH_THREADS": str(WRK_THREADS)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(line for line in output.splitlines() if line.startswith('{"requests"'))
    result: dict[str, int] = msgspec.json.decode(line)
    return result


def _worker_rss_mb(pid: int) -> list[float]:
    children = psutil.Process(pid).children(recursive=True)
    workers = [c for c in children if "python" in c.name().lower() or "granian" in c.name().lower()]
    return [round(c.memory_info().rss / 2**20, 1) for c in workers]


def _deployed_environment(folder: Path) -> Path:
    """A virtual environment with what the image installs (`uv sync --no-dev`), whose Python serves Accounts: the
    dev tools of .venv would add to every worker's RSS what a deployment never loads (advanced-alchemy imports
    pydantic, 18 MB, whenever it is installed). Returns its Python."""
    uv = os.environ.get("UV") or shutil.which("uv") or "python3 -m uv"
    subprocess.run(  # noqa: S603 - our own uv, with fixed arguments
        [*uv.split(), "sync", "--locked", "--no-dev", "--quiet"],
        cwd=ROOT,
        env=dict(os.environ) | {"UV_PROJECT_ENVIRONMENT": str(folder), "UV_PYTHON_DOWNLOADS": "never"},
        check=True,
    )
    return folder / "bin" / "python"


def _hash_ms() -> dict[str, float]:
    """One argon2id verification, in ms, by Accounts' implementation (libsodium) and the peer's (argon2-cffi)."""
    hashed = HASHER.hash(ADMIN_PASSWORD)
    verifications: dict[str, Callable[[], object]] = {
        "libsodium": partial(nacl.pwhash.argon2id.verify, hashed.encode(), ADMIN_PASSWORD.encode()),
        "argon2-cffi": partial(HASHER.verify, hashed, ADMIN_PASSWORD),
    }
    timings = {}
    for name, verify in verifications.items():
        started = time.perf_counter()
        for _ in range(20):
            verify()
        timings[name] = round((time.perf_counter() - started) / 20 * 1000, 2)
    return timings


def _ratio(own: float, reference: float) -> str:
    return f"{own / reference:.2f}" if reference else "-"


def render(report: Report) -> str:
    accounts, ceiling, peer = (report.servers.get(t) for t in ("accounts", "ceiling", "peer"))
    hashes = report.hash_ms.items()
    lines = [
        f"Users: {report.users:,}; wrk -t{WRK_THREADS} -c{report.connections}, {report.runs} runs of"
        f" {report.duration} s (median); {WORKERS} workers per server; argon2id verify alone: "
        + ", ".join(f"{ms} ms with {name} (at most {2000 / ms:.0f} logins/s on 2 cores)" for name, ms in hashes)
        + " (Accounts hashes with libsodium, the peer with argon2-cffi).",
        "",
        "| scenario | Accounts req/s | p50 ms | p99 ms | ceiling req/s | peer req/s | peer p99 ms "
        "| x ceiling | x peer | p99 / peer p99 | CPU us/req: Accounts, ceiling, peer |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        own = accounts.scenarios.get(scenario.name) if accounts else None
        top = ceiling.scenarios.get(scenario.name) if ceiling else None
        other = peer.scenarios.get(scenario.name) if peer else None
        if own is None:
            continue
        lines.append(
            f"| {scenario.name} | {own.rps:.0f} | {own.p50_ms} | {own.p99_ms} | {top.rps if top else 0:.0f} "
            f"| {other.rps if other else 0:.0f} | {other.p99_ms if other else '-'} "
            f"| {_ratio(own.rps, top.rps if top else 0)} | {_ratio(own.rps, other.rps if other else 0)} "
            f"| {_ratio(own.p99_ms, other.p99_ms if other else 0)} "
            f"| {', '.join(f'{figure.cpu_us:.0f}' if figure else '-' for figure in (own, top, other))} |"
        )
    unanswered = [
        f"{name}: " + ", ".join(f"{count} x {status}" for status, count in sorted(figure.non_2xx_statuses.items()))
        for name, figure in (accounts.scenarios.items() if accounts else [])
        if figure.non_2xx_statuses
    ]
    lines += ["", f"Accounts' non-2xx answers by scenario: {'; '.join(unanswered) or 'none'}."]
    single = accounts.scenarios.get(SINGLE_READ) if accounts else None
    batch = accounts.scenarios.get(BATCH_READ) if accounts else None
    if single is not None and batch is not None:
        lines += [
            "",
            f"Users read per second: {batch.rps * BATCH_SIZE:,.0f} by batch-get of {BATCH_SIZE}, {single.rps:,.0f} by"
            f" single getUser calls: a user costs {batch.rps * BATCH_SIZE / single.rps:.1f}x less by batch.",
        ]
    lines += ["", "| server | start to ready s | RSS per worker MB | errors (non-2xx / socket) |", "|---|---|---|---|"]
    for name, server in report.servers.items():
        non_2xx = sum(f.non_2xx for f in server.scenarios.values())
        socket_errors = sum(f.socket_errors for f in server.scenarios.values())
        rss = ", ".join(f"{mb:.0f}" for mb in server.rss_mb_per_worker)
        lines.append(f"| {name} | {server.ready_seconds} | {rss} | {non_2xx} / {socket_errors} |")
    if report.imports is not None or report.queue is not None:
        lines.append(render_jobs(report.imports, report.queue).rstrip("\n"))
    if report.webhooks is not None:
        lines.append(render_webhooks(report.webhooks).rstrip("\n"))
    if report.events is not None:
        lines.append(render_events(report.events).rstrip("\n"))
    return "\n".join(lines) + "\n"


def run_job_scenarios(bench: Bench, report: Report, servers: list[Server]) -> None:
    """Scenarios 6 (a bulk import through Accounts) and 7 (no-op jobs: our job path against bare SAQ), each
    with only the processes it needs running (the database has connections for a few pools only)."""
    wanted = bench.args.scenario
    accounts = next((server for server in servers if server.target == "accounts"), None)
    for server in servers:
        if server is not accounts:
            server.stop()
    if accounts is not None and accounts.token and bench.args.import_rows and (not wanted or "6" in wanted):
        _, env = bench.command("accounts", int(accounts.base.rsplit(":", 1)[1]))
        report.imports = measure_import(env, bench.workdir, accounts.base, accounts.token, bench.args.import_rows)
        print(f"  import: {report.imports}", flush=True)
    if accounts is not None:
        accounts.stop()
    if bench.args.jobs and (not wanted or "7" in wanted):
        if asyncio.run(redis_answers()):
            report.queue = asyncio.run(measure_queue(bench.dsn, bench.args.jobs, bench.args.runs))
            print(f"  job path: {report.queue}", flush=True)
        else:
            print("  job path: skipped, no Redis answers at BENCH_REDIS_URL", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", choices=["accounts", "ceiling", "peer"], action="append")
    parser.add_argument("--import-rows", type=int, default=100_000, help="users in the import scenario (6)")
    parser.add_argument("--jobs", type=int, default=3_000, help="no-op jobs per run in the job path scenario (7)")
    parser.add_argument(
        "--scenario", action="append", help="run only this scenario (its number, e.g. 2m); repeat for more"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (make bench installs it with apt-get)")
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        bench = Bench(args, Path(workdir))
        bench.prepare()
        report = Report(
            users=args.users, duration=args.duration, runs=args.runs, connections=args.connections, hash_ms=_hash_ms()
        )
        servers: list[Server] = []
        try:
            for target in args.only or ["accounts", "ceiling", "peer"]:
                servers.append(bench.start(target))
                print(f"{target} ready in {servers[-1].ready_seconds} s", flush=True)
            for scenario in SCENARIOS:
                if args.scenario and scenario.name.split()[0] not in args.scenario:
                    continue
                for target, figure in bench.measure(servers, scenario).items():
                    print(
                        f"  {target:8} {scenario.name:48} {figure.rps:9.0f} req/s  p99 {figure.p99_ms:7.1f} ms"
                        f"  CPU {figure.cpu_us:6.0f} us/req",
                        flush=True,
                    )
                    report.servers.setdefault(
                        target,
                        ServerResult(
                            ready_seconds=next(s.ready_seconds for s in servers if s.target == target),
                            rss_mb_per_worker=[],
                        ),
                    ).scenarios[scenario.name] = figure
            for server in servers:
                if server.target in report.servers:  # not when only job scenarios ran
                    report.servers[server.target].rss_mb_per_worker = _worker_rss_mb(server.process.pid)
            run_job_scenarios(bench, report, servers)
            if not args.scenario or "14" in args.scenario:  # commit to webhook received, on Redis if it answers
                report.webhooks = measure_webhooks(redis=asyncio.run(redis_answers()))
                print(f"  webhooks: {report.webhooks}", flush=True)
            run_event_scenarios(bench, report)
        finally:
            for server in servers:
                server.stop()
    (RESULTS / "latest.json").write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    table = render(report)
    (RESULTS / "latest.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
