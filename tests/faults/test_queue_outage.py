"""A queue outage: users sign up before, during and after a stop of the Redis that holds the job queue, which
starts again empty (no persistence), as a Redis that was replaced does. Every sign-up the service
acknowledged gets its verification e-mail all the same: the message waits in the outbox, and the outbox
flush puts it back on the queue.

The Redis is the test's own (a child `redis-server` on a free port), and so are the database, the SMTP server
(aiosmtpd, as in tests/integration/auth/test_email.py) and the worker process (as in tests/integration/jobs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from saq.queue.redis import RedisQueue

from tests.faults.support import RecordFigures, Serve, seconds_until
from tests.integration.auth import test_email as email_fixtures
from tests.integration.auth.support import PASSWORD, REGISTER, eventually
from tests.integration.auth.test_email import Inbox
from tests.integration.jobs.support import WorkerProcess
from tests.server import free_port

# The e-mail tests' SMTP server (aiosmtpd) and what it received, in force in this module.
smtp_server = email_fixtures.smtp_server
inbox = email_fixtures.inbox

PHASES = ("before", "during", "after")
SIGN_UPS_PER_PHASE = 5
OUTAGE_SECONDS = 3.0
"""Seconds Redis stays down (from its stop to its restart), sign-ups of the `during` phase included."""
FLUSH_AFTER = 1
"""OUTBOX_FLUSH_AFTER: seconds an unsent message waits before a flush enqueues it again."""
FLUSH_EVERY = 1.0
"""Seconds between the flushes the test enqueues itself (the worker's cron runs once a minute)."""
DELIVERY = 20.0
"""Seconds every acknowledged sign-up's e-mail may take to arrive."""
START = 10.0
"""Seconds redis-server may take to answer after its start."""
CASE_SECONDS = 60.0
"""The whole case, so that a hang anywhere fails it instead of using up CI's budget."""
QUEUE_NAME = "accounts-outage"
"""The served app's and the worker's queue (on the test's own Redis)."""


class RedisServer:
    """`redis-server` as a child process on 127.0.0.1:`port`, without persistence: a restart starts empty."""

    def __init__(self, binary: str, port: int, log: Path) -> None:
        self.binary = binary
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        assert self.process is None
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([*command, "--daemonize", "no"], stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + START
        while not self._answers():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"redis-server did not answer within {START} s"
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited within ten seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(binary, free_port(), tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mail_env(
    own_database: str, redis_server: RedisServer, smtp_server: tuple[Inbox, int], tmp_path: Path
) -> dict[str, str]:
    """What the server and the worker share: the database, the queue on the test's Redis, mail to the test's SMTP
    server, and an outbox flush that picks up messages a second old."""
    return {
        "DATABASE_URL": own_database,
        "REDIS_URL": redis_server.url,
        "QUEUE_NAME": QUEUE_NAME,
        "DATA_DIR": str(tmp_path / "data"),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server[1]),
        "SMTP_TLS": "none",
        "MAIL_FROM": "Accounts <no-reply@example.test>",
        "PUBLIC_URL": "https://accounts.example.test",
        "OUTBOX_FLUSH_AFTER": str(FLUSH_AFTER),
    }


@pytest.fixture
def base_url(mail_env: dict[str, str], serve: Serve) -> Iterator[str]:
    with serve(**mail_env) as url:
        yield url


@pytest.fixture
async def mail_worker(mail_env: dict[str, str], tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    """`accounts.worker.main` in a child process on the served app's queue; stopped after the test."""
    inherited = {name: value for name, value in os.environ.items() if name not in mail_env}
    worker = WorkerProcess(
        inherited
        | mail_env
        | {
            "LOG_FORMAT": "json",
            "WORKER_CONCURRENCY": "4",
            "SHUTDOWN_TIMEOUT": "1",
            "WORKER_METRICS_PORT": "0",  # no port to collide with another session's worker
        },
        tmp_path / "worker.log",
    )
    try:
        yield worker
    finally:
        if worker.process.poll() is None:
            worker.signal(signal.SIGTERM)
            await worker.exit_code(15)


async def sign_ups(client: httpx.AsyncClient, phase: str) -> dict[str, int | None]:
    """SIGN_UPS_PER_PHASE sign-ups at once; the status each e-mail address was answered (None: no answer)."""

    async def sign_up(number: int) -> tuple[str, int | None]:
        name = f"{phase}{number}x{time.monotonic_ns()}"
        email = f"{name}@example.com"
        try:
            response = await client.post(REGISTER, json={"email": email, "username": name, "password": PASSWORD})
        except httpx.TransportError:
            return email, None
        return email, response.status_code

    return dict(await asyncio.gather(*(sign_up(number) for number in range(SIGN_UPS_PER_PHASE))))


def missing(inbox: Inbox, addresses: list[str]) -> list[str]:
    return [address for address in addresses if not inbox.to(address)]


async def test_every_acknowledged_sign_up_gets_its_email_across_a_redis_outage(
    base_url: str,
    mail_worker: WorkerProcess,
    redis_server: RedisServer,
    inbox: Inbox,
    record_figures: RecordFigures,
) -> None:
    answered: dict[str, dict[str, int | None]] = {}
    async with asyncio.timeout(CASE_SECONDS), httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answered["before"] = await sign_ups(client, "before")

        async def before_delivered() -> bool:
            return not missing(inbox, [email for email, status in answered["before"].items() if status == 201])

        await eventually(before_delivered, within=DELIVERY)  # the worker is up and the pipeline works

        stopped = time.monotonic()
        await asyncio.to_thread(redis_server.stop)
        answered["during"] = await sign_ups(client, "during")
        await asyncio.sleep(max(OUTAGE_SECONDS - (time.monotonic() - stopped), 0))
        await asyncio.to_thread(redis_server.start)
        answered["after"] = await sign_ups(client, "after")

        acknowledged = {phase: [e for e, status in answered[phase].items() if status == 201] for phase in PHASES}
        flushes = RedisQueue.from_url(redis_server.url, name=QUEUE_NAME)
        await flushes.connect()
        last_flush = 0.0

        async def all_delivered() -> bool:
            nonlocal last_flush
            if time.monotonic() - last_flush >= FLUSH_EVERY:  # as the worker's cron does, but every second
                await flushes.enqueue("flush_outbox")
                last_flush = time.monotonic()
            return not any(missing(inbox, addresses) for addresses in acknowledged.values())

        try:
            delivered_after = await seconds_until(all_delivered, within=DELIVERY)
        finally:
            await flushes.disconnect()

    undelivered = {phase: missing(inbox, addresses) for phase, addresses in acknowledged.items()}
    statuses = {phase: Counter(answered[phase].values()) for phase in PHASES}
    refused = {phase: dict(counts) for phase, counts in statuses.items() if set(counts) != {201}}
    worker_exit = mail_worker.process.poll()
    record_figures(
        {f"{phase}: sign-ups answered": str(dict(statuses[phase])) for phase in PHASES}
        | {f"{phase}: e-mails missing": len(undelivered[phase]) for phase in PHASES}
        | {
            "all delivered after (s)": None if delivered_after is None else round(delivered_after, 2),
            "worker exit code": worker_exit,
        }
    )
    assert undelivered == {phase: [] for phase in PHASES}, f"acknowledged sign-ups without an e-mail after {DELIVERY} s"
    assert worker_exit is None, f"the worker exited:\n{mail_worker.output[-3000:]}"
    # Sign-up needs only PostgreSQL (the e-mail waits in the outbox): a queue outage refuses none.
    assert refused == {}
