"""Fixtures of the scale-out tests: a real streaming replica, and a real PgBouncer in transaction mode."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.clusters import initdb, postgres_server, server_tools
from tests.conftest import database_url_on, execute, migrate
from tests.integration.scaleout.processes import run, scratch_dir, unprivileged
from tests.server import free_port

REPLICATED_DATABASE = "accounts_replicated"
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Replication:
    """URLs of one database on a primary and on its streaming replica."""

    primary: str
    replica: str

    async def caught_up(self) -> None:
        await caught_up(self.primary, self.replica)

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """The replica replays what was written before the block, and nothing written in it until it ends."""
        await self.caught_up()
        await fetchval(self.replica, "SELECT pg_wal_replay_pause()")
        try:
            async with asyncio.timeout(30):
                while await fetchval(self.replica, "SELECT pg_get_wal_replay_pause_state()") != "paused":
                    await asyncio.sleep(0.05)
            yield
        finally:
            await fetchval(self.replica, "SELECT pg_wal_replay_resume()")
        await self.caught_up()


@dataclass(frozen=True)
class SignedUp:
    """A user registered and logged in through the API."""

    user: dict[str, Any]
    headers: dict[str, str]
    refresh_token: str


async def sign_up(client: httpx.AsyncClient) -> SignedUp:
    name = f"user{uuid.uuid4().hex[:12]}"
    email = f"{name}@example.com"
    created = await client.post("/api/v1/auth/register", json={"email": email, "username": name, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return SignedUp(created.json(), *await log_in(client, email))


async def log_in(client: httpx.AsyncClient, email: str) -> tuple[dict[str, str], str]:
    """The auth header and the refresh token of a password login."""
    tokens = await client.post(
        "/api/v1/auth/token", data={"grant_type": "password", "username": email, "password": PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}, tokens.json()["refresh_token"]


async def caught_up(primary: str, replica: str) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    written = await fetchval(primary, "SELECT pg_current_wal_lsn()::text")
    async with asyncio.timeout(30):
        while not await fetchval(replica, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", written):
            await asyncio.sleep(0.05)


async def fetchval(url: str, query: str, *args: object) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def replicated_servers() -> Iterator[tuple[str, str]]:
    """A throwaway primary (initdb, trust, on a free port) and a streaming replica of it made with
    `pg_basebackup -R`, so nothing of the machine's own PostgreSQL is touched; both are stopped and
    deleted at the end of the session. Yields the maintenance URLs of (primary, replica)."""
    bin_dir = server_tools()
    with scratch_dir("accounts-replication-") as root:
        primary_data, replica_data = root / "primary", root / "replica"
        initdb(bin_dir, primary_data)
        with postgres_server(bin_dir, primary_data, free_port()) as primary:
            backup = [str(bin_dir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]
            run([*backup, "-D", str(replica_data), "-R", "-X", "stream", "-c", "fast", "--no-sync"])
            with postgres_server(bin_dir, replica_data, free_port()) as replica:
                yield primary.url, replica.url


@pytest.fixture(scope="session")
async def replication(replicated_servers: tuple[str, str]) -> Replication:
    """A migrated database on the primary, once the replica has it too."""
    primary_server, replica_server = replicated_servers
    assert await fetchval(replica_server, "SELECT pg_is_in_recovery()") is True
    await execute(primary_server, f'CREATE DATABASE "{REPLICATED_DATABASE}"')
    replication = Replication(
        database_url_on(primary_server, REPLICATED_DATABASE), database_url_on(replica_server, REPLICATED_DATABASE)
    )
    await migrate(replication.primary)
    await caught_up(primary_server, replica_server)
    return replication


StartPgBouncer = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def pgbouncer(database_url: str) -> StartPgBouncer:
    """`async with pgbouncer(pool_size=n) as url:` a real PgBouncer in transaction pooling mode in front of the
    session database, with `n` server connections open and taken in turn (so consecutive transactions of
    one client run on different ones); `url` is the database through it."""
    binary = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    target = make_url(database_url)
    host = target.host or str(target.query.get("host", "127.0.0.1"))

    @asynccontextmanager
    async def start(*, pool_size: int) -> AsyncIterator[str]:
        port = free_port()
        with scratch_dir("accounts-pgbouncer-") as root:
            (root / "userlist.txt").write_text(f'"{target.username}" ""\n')
            (root / "pgbouncer.ini").write_text(
                "[databases]\n"
                f"{target.database} = host={host} port={target.port or 5432} dbname={target.database}"
                f"{f' password={target.password}' if target.password else ''}\n"
                "[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
                f"auth_type = trust\nauth_file = {root}/userlist.txt\n"
                f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nserver_round_robin = 1\n"
                "max_client_conn = 500\n"
                f"logfile = {root}/pgbouncer.log\npidfile = {root}/pgbouncer.pid\n"
            )
            command = unprivileged([binary, str(root / "pgbouncer.ini")])
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # noqa: S603
            try:
                wait_for_port(port, process)
                url = make_url(database_url).set(host="127.0.0.1", port=port, query={}).render_as_string(False)
                await open_server_connections(url, pool_size)
                yield url
            finally:
                process.terminate()
                process.wait(timeout=10)

    return start


async def open_server_connections(url: str, count: int) -> None:
    """Hold `count` transactions at once through PgBouncer, so it opens that many server connections."""
    clients = [await asyncpg.connect(url, statement_cache_size=0) for _ in range(count)]
    try:
        await asyncio.gather(*(client.execute("SELECT pg_sleep(0.2)") for client in clients))
    finally:
        await asyncio.gather(*(client.close() for client in clients))


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "pgbouncer exited at start"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "pgbouncer did not listen"
        time.sleep(0.05)
