"""Running `accounts serve` (what `make run` starts) as a real process for the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `accounts serve` (output to `log`) and wait until it is live; returns the process and its base URL.
    The caller stops it."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    # Small pools unless a test asks: a run has many servers, and each worker's default pools (10 + 20 overflow, and
    # 10 asyncpg; an in-process job worker 11 more and its queue 12) kept ~25 of PostgreSQL's default 100 connections.
    environment |= {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "DATABASE_POOL_SIZE": "4",
        "DATABASE_MAX_OVERFLOW": "4",
        "WORKER_CONCURRENCY": "2",
        **env,
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "accounts", "serve"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()  # SIGTERM: granian stops its workers too
            process.wait(timeout=30)
            raise AssertionError(log.read_text())
        try:
            if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    """Run `accounts serve` until the block ends, then SIGTERM it and check it stopped cleanly."""
    process, base_url = start_server(env, log)
    try:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            yield client
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert exit_code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
