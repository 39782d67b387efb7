"""Fixtures of the webhook tests: an app and a worker that may deliver to loopback (WEBHOOK_ALLOW_PRIVATE_URLS)
with a retry window of seconds, admins of it and of the session app (which refuses private URLs), receivers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from accounts.core.passwords import hash_password
from accounts.worker import worker_in_process
from tests.database import EMPTY_TABLES, CreateDatabase, execute, migrate
from tests.integration.auth.support import PASSWORD, Client, LoggedIn, insert_user, log_in
from tests.integration.jobs.support import delete_queue
from tests.integration.webhooks.support import Receiver

RETRY_WINDOW = 2
MAX_FAILURES = 2


@pytest.fixture(scope="session")
async def hook_database_url(create_database: CreateDatabase) -> str:
    """A database of the webhook tests' own: the dispatcher's lock and the feed's horizon are per database, so no
    server or worker another test left running on the session database can take its deliveries or hold them back."""
    url = await create_database()
    await migrate(url)
    return url


@pytest.fixture(autouse=True)
async def clean_hook_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty the webhook database's tables after each test that used it."""
    yield
    if "hook_database_url" in request.fixturenames:
        await execute(request.getfixturevalue("hook_database_url"), EMPTY_TABLES)


@pytest.fixture(scope="session")
def hook_settings(settings: Settings, hook_database_url: str) -> Settings:
    """Loopback allowed, retries within RETRY_WINDOW seconds, disabled after MAX_FAILURES failed deliveries, on
    a database and a queue of its own."""
    return msgspec.structs.replace(
        settings,
        database_url=hook_database_url,
        webhook_allow_private_urls=True,
        webhook_retry_window=RETRY_WINDOW,
        webhook_max_consecutive_failures=MAX_FAILURES,
        webhook_timeout=2.0,
        queue_name=f"accounts-test-webhooks-{uuid.uuid4().hex[:8]}",
        worker_concurrency=8,
        shutdown_timeout=1,
    )


@pytest.fixture(scope="session")
async def hook_client(hook_settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(hook_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
async def worker(hook_settings: Settings) -> AsyncIterator[None]:
    """A worker (dispatcher and deliveries) on the hook settings, kept for the session (a start and a stop cost a
    second or two); between tests the tables are emptied under it, cursor included. Its queue is emptied at the
    end."""
    try:
        async with worker_in_process(hook_settings):
            yield
    finally:
        await delete_queue(hook_settings)


@pytest.fixture(scope="session")
async def password_hash() -> str:
    return await hash_password(PASSWORD)


@pytest.fixture
async def hook_admin(hook_client: Client, hook_database_url: str, password_hash: str) -> LoggedIn:
    return await log_in(hook_client, await insert_user(hook_database_url, password_hash, "hookadmin", admin=True))


@pytest.fixture
async def admin(client: Client, database_url: str, password_hash: str) -> LoggedIn:
    """An admin of the session app, which refuses private webhook URLs."""
    return await log_in(client, await insert_user(database_url, password_hash, "root", admin=True))


@pytest.fixture
def endpoint() -> Iterator[Receiver]:
    """A receiver answering 204, started; give it the webhook's secret (`endpoint.secrets`)."""
    receiver = Receiver().start()
    yield receiver
    receiver.stop()
