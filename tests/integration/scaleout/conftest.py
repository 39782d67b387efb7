"""Fixtures of the scale-out tests: a real streaming replica, and a real PgBouncer in transaction mode. What they
are made of is in tests/integration/scaleout/support.py and processes.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.engine import make_url

from tests.clusters import initdb, postgres_server, server_tools
from tests.database import database_url_on, execute, migrate
from tests.integration.scaleout.processes import run, scratch_dir, unprivileged, wait_for_port
from tests.integration.scaleout.support import (
    REPLICATED_DATABASE,
    Replication,
    StartPgBouncer,
    caught_up,
    fetchval,
    open_server_connections,
)
from tests.server import free_port


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
