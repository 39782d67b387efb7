"""Test session: a fresh, migrated PostgreSQL database of its own, an app on it, and clean tables per test.

The server is `TEST_DATABASE_URL` if set, else PostgreSQL on 127.0.0.1:5432 if it answers, else the
embedded PostgreSQL (so `make test` passes on a machine with no server); `TEST_DATABASE_URL=embedded`
forces the embedded one. The databases a session creates are dropped at the end; nothing else on the server
is touched. `make test` runs the suite with `-n auto --dist loadfile` (pytest-xdist): in a process per CPU when the
server has connections enough for them (see pytest_xdist_auto_num_workers), each process a session of its own on
its own databases, each test file in one process. The parts these fixtures are made of (making, migrating and
writing to databases) are in tests/database.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.auth.keys import GENERATED_KEY_FILE
from accounts.config import Settings
from accounts.core.db import start_embedded
from tests.database import (
    EMPTY_TABLES,
    CreateDatabase,
    database_url_on,
    execute,
    insert_api_key,
    max_connections,
    migrate,
    shared_server_url,
)
from tests.otlp import OtlpReceiver
from tests.server import serving

CONNECTIONS_PER_WORKER = 100
"""PostgreSQL connections one process running the suite may hold at once: its apps' pools, live servers, job workers
and PgBouncer peak at ~76 together (pg_stat_activity sampled through a serial run)."""
PARALLELISM = pytest.StashKey[str]()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """How many processes `pytest -n auto` (`make test`) runs the suite in: one per CPU, as many as the shared
    server's `max_connections` has room for, and none (the suite in this process) when it has room for one only or
    the server is an embedded one. `PYTEST_XDIST_AUTO_NUM_WORKERS` overrides, as pytest-xdist documents."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    url = asyncio.run(shared_server_url())
    if url is None:
        config.stash[PARALLELISM] = "in this process, on an embedded PostgreSQL"
        return 0
    try:
        room = asyncio.run(max_connections(url)) // CONNECTIONS_PER_WORKER
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:  # the session's fixtures will say it again
        config.stash[PARALLELISM] = f"in this process: the server did not answer ({exc})"
        return 0
    if room < 2:
        config.stash[PARALLELISM] = (
            "in this process: PostgreSQL's max_connections has room for fewer than two processes of"
            f" {CONNECTIONS_PER_WORKER} connections (raise it to {2 * CONNECTIONS_PER_WORKER} or more to run in"
            " parallel)"
        )
        return 0
    workers = min(os.cpu_count() or 1, room)
    config.stash[PARALLELISM] = f"in {workers} processes, a test file each at a time"
    return workers


def pytest_report_header(config: pytest.Config) -> str | None:
    """How `-n auto` runs the suite and why, on the run's first lines."""
    return f"the suite runs {config.stash[PARALLELISM]}" if PARALLELISM in config.stash else None


@pytest.fixture(scope="session")
async def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL of a PostgreSQL server (its maintenance database) the tests may create databases on."""
    return await shared_server_url() or await asyncio.to_thread(
        start_embedded, Path(tmp_path_factory.mktemp("embedded"))
    )


@pytest.fixture(scope="session")
async def create_database(server_url: str) -> AsyncIterator[CreateDatabase]:
    """A factory of empty databases on the test server; all are dropped when the session ends."""
    created: list[str] = []

    async def create() -> str:
        name = f"accounts_test_{uuid.uuid4().hex[:12]}"
        await execute(server_url, f'CREATE DATABASE "{name}"')
        created.append(name)
        return database_url_on(server_url, name)

    yield create
    for name in created:
        await execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def database_url(create_database: CreateDatabase) -> str:
    """The session's database, migrated to head."""
    url = await create_database()
    await migrate(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=str(tmp_path_factory.mktemp("data")),
        log_format="json",
        database_pool_size=3,  # PostgreSQL's default 100 connections are shared by every app and server of a run
        database_max_overflow=20,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def live_url(app: Litestar, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of `accounts serve` (granian, two workers) on the session database, for tests that
    need real sockets and requests truly in parallel (the in-process test client runs them one by one). It signs
    with the in-process app's key, so tokens from either work on both."""
    environment = {
        "DATABASE_URL": str(settings.database_url),
        "WEB_CONCURRENCY": "2",
        "JWT_SIGNING_KEY_FILE": str(settings.data_path / GENERATED_KEY_FILE),
        "EVENT_STREAM_HEARTBEAT": "1",  # an idle event stream shows its heartbeat within a test's patience
    }
    with serving(environment, tmp_path_factory.mktemp("live") / "log") as c:
        yield str(c.base_url)


@pytest.fixture(autouse=True)
async def clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table after each test that used the session database."""
    yield
    if "database_url" not in request.fixturenames:
        return
    await execute(request.getfixturevalue("database_url"), EMPTY_TABLES)


@pytest.fixture
async def service_key(database_url: str) -> str:
    """An API key with `users:read` and `users:write`: the caller for tests of user management."""
    return await insert_api_key(database_url, ["users:read", "users:write"])


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A running OTLP/HTTP receiver: point OTEL_EXPORTER_OTLP_ENDPOINT at `receiver.endpoint`."""
    with OtlpReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* variable of the shell running the tests: only those a test sets."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
