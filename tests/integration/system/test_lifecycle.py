"""`accounts serve` and `accounts worker` as an operator runs them: the database checks before start-up, and the
drain on SIGTERM under load (the real server, two workers, real sockets, the real database)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from accounts.config import Settings
from accounts.core.db import MIGRATIONS_PATH
from accounts.system.lifecycle import database_address
from tests.database import CreateDatabase, migrate
from tests.problems import assert_problem
from tests.server import free_port, start_server

DRAIN_SECONDS = 5
"""Long enough for the test's load balancer to notice, on a busy machine, with seconds to spare."""
SHUTDOWN_TIMEOUT = 30
PROBE_INTERVAL = 0.25
FAILED_PROBES_TO_UNROUTE = 3  # a Kubernetes readinessProbe's default failureThreshold
START_CHECK_TIMEOUT = 60  # seconds for a whole `accounts ...` run that must stop early (mostly imports)
SCRIPT = ScriptDirectory(str(MIGRATIONS_PATH))
(HEAD,) = SCRIPT.get_heads()


@dataclass
class Outcome:
    kind: str
    started: float
    status: int | None = None
    error: BaseException | None = None


class LoadBalancer:
    """Sends requests to one server while it is routed to, and stops routing once readiness fails as often as
    a Kubernetes probe needs: what keeps new requests away from a listener about to close."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.headers = {"X-API-Key": api_key}
        self.routing = asyncio.Event()
        self.routing.set()
        self.outcomes: list[Outcome] = []
        self.unready_answers: list[httpx.Response] = []
        self.first_unready_at = float("inf")
        self.live_while_unready: list[int] = []

    async def probe_readiness(self) -> None:
        failures = 0
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as probe:
            while self.routing.is_set():
                try:
                    response = await probe.get("/health/ready")
                except httpx.TransportError:  # counted as a failed probe, as a balancer would
                    response = None
                if response is not None and response.status_code == 200:
                    failures = 0
                else:
                    failures += 1
                    if response is not None:
                        self.first_unready_at = min(self.first_unready_at, time.monotonic())
                        self.unready_answers.append(response)
                        self.live_while_unready.append((await probe.get("/health/live")).status_code)
                    if failures >= FAILED_PROBES_TO_UNROUTE:
                        self.routing.clear()
                await asyncio.sleep(PROBE_INTERVAL)

    async def send_while_routed(self, kind: str, client: httpx.AsyncClient) -> None:
        """GET the liveness route and a page of users (a database read) in turn, over `client`'s connections."""
        paths = ("/health/live", "/api/v1/users?limit=50")
        sent = 0
        while self.routing.is_set():
            outcome = Outcome(kind, time.monotonic())
            try:
                outcome.status = (await client.get(paths[sent % 2], headers=self.headers)).status_code
            except httpx.TransportError as exc:
                outcome.error = exc
            self.outcomes.append(outcome)
            sent += 1


async def upload_slowly(base_url: str, until: asyncio.Event, most_seconds: float) -> Outcome:
    """Sign up with a body sent a little at a time until `until` is set: a request in flight all along."""
    outcome = Outcome("slow upload", time.monotonic())
    name = f"slow{uuid.uuid4().hex[:12]}"

    async def body() -> AsyncIterator[bytes]:
        yield f'{{"email": "{name}@example.com", "username": "{name}", "password": "long enough"'.encode()
        deadline = time.monotonic() + most_seconds
        while not until.is_set() and time.monotonic() < deadline:
            yield b" "  # JSON allows any amount of white space between tokens
            await asyncio.sleep(0.2)
        yield b"}"

    async with httpx.AsyncClient(base_url=base_url, timeout=SHUTDOWN_TIMEOUT) as client:
        try:
            response = await client.post(
                "/api/v1/auth/register", content=body(), headers={"Content-Type": "application/json"}
            )
            outcome.status = response.status_code
        except httpx.TransportError as exc:
            outcome.error = exc
    return outcome


async def wait_until_refused(port: int, closed: asyncio.Event) -> None:
    """Open TCP connections (sending nothing) until one is refused: the listener is closed."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            closed.set()
            return
        writer.close()
        await asyncio.sleep(0.1)


def stop_if_running(process: subprocess.Popen[bytes]) -> None:
    """After a failed test: SIGINT stops granian and its workers at once, with no drain."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()


# --- SIGTERM: drain, finish in-flight requests, exit ------------------------------------------------


async def test_sigterm_drains_under_load_finishes_in_flight_requests_and_exits_0(
    database_url: str, service_key: str, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    env = {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_CONCURRENCY": "2",
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    process, base_url = await asyncio.to_thread(start_server, env, log)
    port = int(base_url.rsplit(":", 1)[1])
    balancer = LoadBalancer(base_url, service_key)
    listener_closed = asyncio.Event()
    try:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=SHUTDOWN_TIMEOUT) as kept_alive,
            httpx.AsyncClient(
                base_url=base_url, timeout=SHUTDOWN_TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0)
            ) as one_per_request,
        ):
            assert (await one_per_request.get("/health/ready")).status_code == 200
            load = [
                *(asyncio.create_task(balancer.send_while_routed("keep-alive", kept_alive)) for _ in range(3)),
                *(asyncio.create_task(balancer.send_while_routed("new connection", one_per_request)) for _ in range(3)),
            ]
            probing = asyncio.create_task(balancer.probe_readiness())
            await asyncio.sleep(1)

            sigterm_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            uploads = [
                asyncio.create_task(upload_slowly(base_url, listener_closed, DRAIN_SECONDS + 20)) for _ in range(3)
            ]
            await asyncio.wait_for(wait_until_refused(port, listener_closed), DRAIN_SECONDS + 20)
            with pytest.raises(httpx.ConnectError):
                await one_per_request.get("/health/live")
            uploaded = await asyncio.gather(*uploads)
            await asyncio.gather(probing, *load)

        exit_code = await asyncio.to_thread(process.wait, SHUTDOWN_TIMEOUT + 15)
    finally:
        await asyncio.to_thread(stop_if_running, process)

    assert exit_code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    # While draining: not ready (so the balancer stopped routing), still live, still serving.
    assert balancer.unready_answers, "the balancer stopped routing without a 503 from /health/ready"
    for answer in balancer.unready_answers:
        assert "shutting down" in assert_problem(answer, 503)["detail"]
        assert int(answer.headers["retry-after"]) > 0
    assert set(balancer.live_while_unready) == {200}
    drain_ends = sigterm_at + DRAIN_SECONDS
    served_while_draining = {
        o.kind for o in balancer.outcomes if o.started > balancer.first_unready_at and o.status == 200
    }
    assert served_while_draining == {"keep-alive", "new connection"}
    # No request failed; a refused connection counts as failed only if attempted before the drain could end.
    failed = [
        o
        for o in balancer.outcomes
        if o.status != 200 and not (isinstance(o.error, httpx.ConnectError) and o.started >= drain_ends)
    ]
    assert failed == [], failed[:5]
    # The uploads were still being sent when the listener closed: in flight, and finished.
    assert [o.status for o in uploaded] == [201] * len(uploaded), [o.error for o in uploaded]
    assert len(balancer.outcomes) > 50


async def test_a_request_outliving_the_shutdown_timeout_is_cut_and_the_server_still_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "data"), "WEB_CONCURRENCY": "2"}
    process, base_url = await asyncio.to_thread(start_server, env | {"SHUTDOWN_TIMEOUT": "2"}, log)
    never = asyncio.Event()
    try:
        upload = asyncio.create_task(upload_slowly(base_url, never, most_seconds=120))
        await asyncio.sleep(1)  # the upload is under way
        stopping_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 60)
        stopped_after = time.monotonic() - stopping_at
        cut = await upload
    finally:
        await asyncio.to_thread(stop_if_running, process)

    assert exit_code == 0, log.read_text()
    assert stopped_after < 30, f"took {stopped_after:.0f} s with SHUTDOWN_TIMEOUT=2 (the upload would last 120 s)"
    assert "Killing worker" in log.read_text()
    assert cut.status is None
    assert isinstance(cut.error, httpx.TransportError)


# --- start-up checks: fail fast, one line, no password ------------------------------------------------


def run_command(command: str, database_url: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "MIGRATE_ON_START"}}
    environment |= {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port())}
    return subprocess.run(  # noqa: S603 - this interpreter, our own command
        [sys.executable, "-m", "accounts", command],
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=START_CHECK_TIMEOUT,
        check=False,
    )


def address(url: str) -> str:
    return database_address(Settings(database_url=url))


def assert_stopped_with(result: subprocess.CompletedProcess[str], message: str) -> None:
    """The command exited non-zero before serving anything, saying `message` on one line of stderr."""
    assert result.returncode != 0
    assert result.stderr.startswith(f"accounts: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Spawning worker" not in result.stdout


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_an_unreachable_database_stops_start_up_with_one_line(command: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://accounts:s3cret-password@127.0.0.1:{port}/accounts"
    started = time.monotonic()
    result = await asyncio.to_thread(run_command, command, url, tmp_path)
    assert time.monotonic() - started < START_CHECK_TIMEOUT / 2, "no retrying: a refused connection is final"

    assert_stopped_with(result, f"the database at 127.0.0.1:{port}/accounts is not reachable: ")
    assert "s3cret-password" not in result.stderr + result.stdout


async def test_a_database_that_never_answers_stops_start_up_after_the_connect_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # the kernel accepts connections into the backlog; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/accounts"
        result = await asyncio.to_thread(run_command, "serve", url, tmp_path, DATABASE_CONNECT_TIMEOUT="1")

    assert_stopped_with(result, f"the database at {address(url)} is not reachable: no answer within 1 s")


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_a_schema_behind_the_migrations_stops_start_up_with_one_line(
    command: str, create_database: CreateDatabase, tmp_path: Path
) -> None:
    previous = SCRIPT.get_revision(HEAD).down_revision
    assert isinstance(previous, str)
    url = await create_database()
    await migrate(url, previous)

    result = await asyncio.to_thread(run_command, command, url, tmp_path)

    assert_stopped_with(
        result,
        f"the database schema at {address(url)} is at revision {previous} but this release needs {HEAD}: "
        "run `accounts database upgrade` (make migrate)",
    )


async def test_an_empty_database_stops_start_up_with_one_line(create_database: CreateDatabase, tmp_path: Path) -> None:
    url = await create_database()

    result = await asyncio.to_thread(run_command, "worker", url, tmp_path)

    assert_stopped_with(result, f"the database schema at {address(url)} is at revision none (no migration applied)")
