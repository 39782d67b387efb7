"""Test session: a fresh, migrated PostgreSQL database of its own, an app on it, and clean tables per test.

The server is `TEST_DATABASE_URL` if set, else PostgreSQL on 127.0.0.1:5432 if it answers, else the
embedded PostgreSQL (so `make test` passes on a machine with no server); `TEST_DATABASE_URL=embedded`
forces the embedded one. The database this session
creates is dropped at the end; nothing else on the server is touched.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import make_url

from accounts.app import create_app
from accounts.auth.credentials import new_api_key, secret_hash
from accounts.config import Settings
from accounts.core.db import sqlalchemy_config, start_embedded
from tests.otlp import OtlpReceiver
from tests.server import serving

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = (
    "users",
    "refresh_tokens",
    "api_keys",
    "login_failures",
    "idempotency_keys",
    "email_tokens",
    "outbox_messages",
)


async def _answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


@pytest.fixture(scope="session")
async def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL of a PostgreSQL server (its maintenance database) the tests may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url and url != "embedded":
        return url
    if url is None and await _answers(DEFAULT_SERVER_URL):
        return DEFAULT_SERVER_URL
    return await asyncio.to_thread(start_embedded, Path(tmp_path_factory.mktemp("embedded")))


def database_url_on(server_url: str, database: str) -> str:
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


CreateDatabase = Callable[[], Awaitable[str]]


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


async def execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def migrate(database_url: str, revision: str = "head", *, down: bool = False) -> None:
    """Run the Alembic migrations as `accounts database upgrade/downgrade` does (in a thread: Alembic
    runs its own event loop)."""
    commands = AlembicCommands(sqlalchemy_config(Settings(database_url=database_url)))
    await asyncio.to_thread(commands.downgrade if down else commands.upgrade, revision)


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
        database_pool_size=5,
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
def live_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of `accounts serve` (granian, two workers) on the session database, for tests that
    need real sockets and requests truly in parallel (the in-process test client runs them one by one)."""
    with serving({"DATABASE_URL": database_url, "WEB_CONCURRENCY": "2"}, tmp_path_factory.mktemp("live") / "log") as c:
        yield str(c.base_url)


@pytest.fixture(autouse=True)
async def clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table after each test that used the session database."""
    yield
    if "database_url" not in request.fixturenames:
        return
    await execute(request.getfixturevalue("database_url"), f"TRUNCATE {', '.join(TABLES)} CASCADE")


async def insert_api_key(database_url: str, scopes: list[str]) -> str:
    """A new API key, written straight into the database; returns the secret."""
    prefix, key = new_api_key()
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, created_at, updated_at)"
            " VALUES ($1, 'tests', $2, $3, $4, now(), now())",
            uuid.uuid4(),
            prefix,
            secret_hash(key),
            scopes,
        )
    finally:
        await connection.close()
    return key


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
