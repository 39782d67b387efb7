"""The test databases, fixtures aside: where the server is, making and migrating databases, statements run on
them, and API keys written straight into them. tests/conftest.py's fixtures are made of these."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from advanced_alchemy.alembic.commands import AlembicCommands
from sqlalchemy.engine import make_url

from accounts.auth.credentials import new_api_key
from accounts.config import Settings
from accounts.core.db import sqlalchemy_config
from accounts.core.security import secret_hash

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = (
    # First, in the order a running webhook worker locks them (deliveries, endpoints, then events), so emptying
    # the tables under it waits for it rather than deadlocking with it.
    "webhook_deliveries",
    "webhooks",
    "webhook_dispatch",
    "users",
    "refresh_tokens",
    "api_keys",
    "login_failures",
    "idempotency_keys",
    "email_tokens",
    "outbox_messages",
    "oauth_clients",
    "client_assertions",
    "revoked_tokens",
    "sessions",
    "mfa_challenges",
    "totp_factors",
    "recovery_codes",
    "events",
    "passkeys",
    "webauthn_challenges",
)
EMPTY_TABLES = "".join(f"DELETE FROM {table};" for table in TABLES)  # noqa: S608 - our own table names
"""Empties every table, in one transaction. DELETE, not TRUNCATE: a TRUNCATE of these tables cost PostgreSQL
~200 ms (new files for each table and index), a DELETE of a test's few rows ~1 ms, and the suite empties them after
every test. Every foreign key cascades or sets null, so the order only matters for the webhook worker's locks."""

CreateDatabase = Callable[[], Awaitable[str]]


async def shared_server_url() -> str | None:
    """The PostgreSQL server the tests share with whatever else runs on it: `TEST_DATABASE_URL` if set, else the local
    one if it answers; None when the tests are to start an embedded server of their own."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url == "embedded":
        return None
    if url:
        return url
    return DEFAULT_SERVER_URL if await answers(DEFAULT_SERVER_URL) else None


async def max_connections(url: str) -> int:
    connection = await asyncpg.connect(url, timeout=3)
    try:
        return int(await connection.fetchval("SHOW max_connections"))
    finally:
        await connection.close()


async def answers(url: str) -> bool:
    """Whether a PostgreSQL server accepts a connection to `url` within 3 seconds."""
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def database_url_on(server_url: str, database: str) -> str:
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


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


async def insert_api_key(database_url: str, scopes: list[str]) -> str:
    """A new API key, written straight into the database; returns the secret."""
    _, key = await insert_api_key_with_id(database_url, scopes)
    return key


async def insert_api_key_with_id(database_url: str, scopes: list[str]) -> tuple[str, str]:
    """A new API key, written straight into the database; returns its owner identity (`key:<id>`) and its secret."""
    prefix, key = new_api_key()
    key_id = uuid.uuid4()
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, created_at, updated_at)"
            " VALUES ($1, 'tests', $2, $3, $4, now(), now())",
            key_id,
            prefix,
            secret_hash(key),
            scopes,
        )
    finally:
        await connection.close()
    return f"key:{key_id}", key
