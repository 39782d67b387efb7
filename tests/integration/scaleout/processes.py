"""Running PostgreSQL's server tools and PgBouncer for the scale-out tests, in throwaway folders.

Both refuse to run as root; as root, they run as the `postgres` user the PostgreSQL packages create.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_USER = "postgres"


def unprivileged(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def run(command: list[str]) -> None:
    """Run a tool to the end; its output is shown only if it fails."""
    done = subprocess.run(unprivileged(command), capture_output=True, text=True, check=False)  # noqa: S603
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A new folder the tools may write in (not pytest's, which only root may enter), deleted afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, SERVER_USER, SERVER_USER)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def postgres_bin_dir() -> Path | None:
    """Where initdb, pg_ctl and pg_basebackup are: beside the initdb on PATH (often a link into Debian's
    folder), else in Debian's newest /usr/lib/postgresql/N/bin."""
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return candidates[-1].parent if candidates else None


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Wait until PgBouncer, started as `process`, listens on `port`; fails if it exits or does not in time."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "pgbouncer exited at start"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "pgbouncer did not listen"
        time.sleep(0.05)
