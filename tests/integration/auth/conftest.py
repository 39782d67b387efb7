"""Fixtures of the auth tests: accounts A, B and an admin (rows made with SQL), their logins, and the signing key."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey
from litestar import Litestar

from accounts.auth.keys import GENERATED_KEY_FILE
from accounts.config import Settings
from accounts.core.passwords import hash_password
from tests.integration.auth.support import PASSWORD, Account, Client, LoggedIn, MakeUser, insert_user, log_in

_serial = itertools.count(1)


@pytest.fixture(scope="session")
async def password_hash() -> str:
    """The argon2 hash of PASSWORD, made once: every account made with SQL shares it."""
    return await hash_password(PASSWORD)


@pytest.fixture
def make_user(database_url: str, password_hash: str) -> MakeUser:
    """`await make_user(admin=..., active=..., username=...)`: a new account, written with SQL."""

    async def make(*, username: str | None = None, admin: bool = False, active: bool = True) -> Account:
        name = username or f"{'admin' if admin else 'user'}{next(_serial):05d}"
        return await insert_user(database_url, password_hash, name, admin=admin, active=active)

    return make


@pytest.fixture
async def account_a(make_user: MakeUser) -> Account:
    return await make_user(username="user-a")


@pytest.fixture
async def account_b(make_user: MakeUser) -> Account:
    return await make_user(username="user-b")


@pytest.fixture
async def admin_account(make_user: MakeUser) -> Account:
    return await make_user(username="root", admin=True)


@pytest.fixture
async def user_a(client: Client, account_a: Account) -> LoggedIn:
    return await log_in(client, account_a)


@pytest.fixture
async def user_b(client: Client, account_b: Account) -> LoggedIn:
    return await log_in(client, account_b)


@pytest.fixture
async def admin(client: Client, admin_account: Account) -> LoggedIn:
    return await log_in(client, admin_account)


@pytest.fixture(scope="session")
def signing_key_file(app: Litestar, settings: Settings) -> Path:
    """The key the session app generated in its data folder (the app fixture has made it)."""
    path = settings.data_path / GENERATED_KEY_FILE
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def signing_key(signing_key_file: Path) -> OKPKey:
    """The session app's private signing key, loaded by joserfc, to make tokens the app must judge."""
    return OKPKey.import_key(signing_key_file.read_bytes())
