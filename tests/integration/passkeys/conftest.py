"""Fixtures of the passkey tests: users (rows made with SQL) logged in over HTTP, a software authenticator on the
app's origin, and the ceremonies (tests/integration/passkeys/support.py) on the app and sessions of their own."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from accounts.config import Settings
from accounts.core.passwords import hash_password
from tests.integration.auth.support import PASSWORD, Client, LoggedIn, insert_user, log_in
from tests.integration.passkeys.authenticator import SoftAuthenticator
from tests.integration.passkeys.support import Ceremonies

_serial = itertools.count(1)

MakeLogin = Callable[..., Awaitable[LoggedIn]]


@pytest.fixture(scope="session")
async def password_hash() -> str:
    return await hash_password(PASSWORD)


@pytest.fixture
def make_login(client: Client, database_url: str, password_hash: str) -> MakeLogin:
    async def make(*, admin: bool = False) -> LoggedIn:
        account = await insert_user(database_url, password_hash, f"passkeys{next(_serial):04d}", admin=admin)
        return await log_in(client, account)

    return make


@pytest.fixture
async def alice(make_login: MakeLogin) -> LoggedIn:
    return await make_login()


@pytest.fixture
async def bob(make_login: MakeLogin) -> LoggedIn:
    return await make_login()


@pytest.fixture
async def admin(make_login: MakeLogin) -> LoggedIn:
    return await make_login(admin=True)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.async_database_url or "")
    yield engine
    await engine.dispose()


@pytest.fixture
def ceremonies(app: Litestar, client: Client, settings: Settings, engine: AsyncEngine, database_url: str) -> Ceremonies:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return Ceremonies(client, settings, sessions, app.state.users, database_url)


@pytest.fixture
def authenticator(ceremonies: Ceremonies) -> SoftAuthenticator:
    """A platform authenticator on the page of the app's one origin (the origin of PUBLIC_URL)."""
    return ceremonies.authenticator()
