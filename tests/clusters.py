"""Throwaway PostgreSQL clusters (initdb in a scratch folder, served on a free port) for the tests that must
stop, restart or replicate a server, which they may never do to the machine's own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.scaleout.processes import postgres_bin_dir, run, unprivileged

PG_CTL_WAIT = "60"
"""Seconds pg_ctl waits for a start or a stop to finish before it fails."""


def server_tools() -> Path:
    """The folder of initdb, pg_ctl and pg_basebackup; skips the test when they are not installed."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are not installed")
    return bin_dir


def initdb(bin_dir: Path, data: Path) -> None:
    """A new cluster in `data`, trusting every local connection of the `postgres` user.

    initdb's pg_hba.conf trusts local replication connections too, and wal_level=replica is the default."""
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"])


@dataclass(frozen=True)
class Cluster:
    """The cluster in `data`, served on 127.0.0.1:`port` while it is started."""

    bin_dir: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        """Its maintenance database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data.parent}"
        options += " -c fsync=off"  # throwaway data: durability would only cost time
        self._pg_ctl("-o", options, "-l", f"{self.data}.log", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it (`fast`: roll back open transactions and drop every connection) and wait until it is down."""
        self._pg_ctl("-m", mode, "stop")

    def _pg_ctl(self, *args: str) -> None:
        run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w", "-t", PG_CTL_WAIT, *args])


@contextmanager
def postgres_server(bin_dir: Path, data: Path, port: int) -> Iterator[Cluster]:
    """Run the cluster in `data` on 127.0.0.1:`port` until the block ends, however the block stopped or
    restarted it meanwhile."""
    cluster = Cluster(bin_dir, data, port)
    cluster.start()
    try:
        yield cluster
    finally:
        stop = unprivileged([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        subprocess.run(stop, capture_output=True, check=False, timeout=60)  # noqa: S603 - fails when already down
