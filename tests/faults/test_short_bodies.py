"""A client that stops sending: its request is answered 408 or its connection closed within REQUEST_READ_TIMEOUT,
whether it stalls in the body (the app's deadline) or in the head (granian's), and other clients are served
meanwhile. Raw sockets against the real server, since an HTTP client library always finishes its requests."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server import serving

TIMEOUT = 2
"""REQUEST_READ_TIMEOUT of the server under test, in seconds."""
BOUND = TIMEOUT + 3
"""What the test waits, at most, for the server to give up on a stalled client."""


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {"DATABASE_URL": database_url, "WEB_CONCURRENCY": "1", "REQUEST_READ_TIMEOUT": str(TIMEOUT)}
    with serving(env, tmp_path_factory.mktemp("short-bodies") / "serve.log") as client:
        yield client


def stalled(client: httpx.Client, head: bytes) -> tuple[bytes, float]:
    """Send `head` (and no more) on a new connection; returns what the server answered before closing the
    connection, and how long that took."""
    url = client.base_url
    started = time.monotonic()
    with socket.create_connection((url.host, url.port), timeout=BOUND + 5) as connection:
        connection.sendall(head)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received, time.monotonic() - started


SIGN_UP = json.dumps({"email": "slow@example.com", "username": "slow", "password": "long enough"}).encode()


@pytest.mark.parametrize(
    "body_sent",
    [pytest.param(b"", id="no-body-at-all"), pytest.param(SIGN_UP[:20], id="part-of-the-body")],
)
def test_a_body_that_stops_arriving_is_answered_408_and_the_connection_closed(
    server: httpx.Client, body_sent: bytes, database_url: str
) -> None:
    head = (
        b"POST /api/v1/auth/register HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(SIGN_UP)
    )
    received, took = stalled(server, head + body_sent)

    assert TIMEOUT - 0.5 <= took <= BOUND, took
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", received
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in headers.lower()
    assert json.loads(body)["status"] == 408
    assert server.get("/api/v1/users", params={"email": "slow@example.com"}).status_code == 401  # still serving


def test_a_head_that_stops_arriving_has_its_connection_closed(server: httpx.Client) -> None:
    received, took = stalled(server, b"GET /health/live HTTP/1.1\r\nHost: te")

    assert took <= BOUND, took
    assert b"200 OK" not in received


def test_other_clients_are_served_while_one_stalls(server: httpx.Client) -> None:
    url = server.base_url
    with socket.create_connection((url.host, url.port)) as connection:
        connection.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: t\r\nContent-Length: 99\r\n\r\n{")
        started = time.monotonic()
        assert server.get("/health/live").status_code == 200
        assert time.monotonic() - started < 1


def test_a_slow_body_that_keeps_arriving_is_read_whole(server: httpx.Client) -> None:
    """The deadline is per chunk, not for the whole body: a slow but steady client is served."""
    url = server.base_url
    body = json.dumps({"email": "steady@example.com", "username": "steady", "password": "long enough"}).encode()
    head = (
        b"POST /api/v1/auth/register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection((url.host, url.port), timeout=30) as connection:
        connection.sendall(head)
        third = len(body) // 3 + 1
        for start in range(0, len(body), third):
            time.sleep(TIMEOUT * 0.6)
            connection.sendall(body[start : start + third])
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 201 Created"), received
