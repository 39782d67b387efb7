"""HTTP_VERSION: `accounts serve` speaks HTTP/1.1 alone by default, and HTTP/2 by prior knowledge (h2c) beside
HTTP/1.1 on the same port under `auto`."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.server import serving

SIGN_UP = {"email": "h2c@example.com", "username": "h2c", "password": "long enough"}


def h2c(base_url: str) -> httpx.Client:
    """A client that opens connections with the HTTP/2 preface straight away (prior knowledge), as service
    clients and h2c proxies do: no HTTP/1.1 `Upgrade`, which granian does not offer."""
    return httpx.Client(base_url=base_url, http1=False, http2=True, timeout=10)


def test_auto_serves_http2_by_prior_knowledge_and_http1_on_one_port(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "WEB_CONCURRENCY": "1", "HTTP_VERSION": "auto"}
    with serving(env, tmp_path / "serve.log") as http1, h2c(str(http1.base_url)) as http2:
        created = http2.post("/api/v1/auth/register", json=SIGN_UP)
        assert (created.status_code, created.http_version) == (201, "HTTP/2"), created.text
        form = {"grant_type": "password", "username": SIGN_UP["email"], "password": SIGN_UP["password"]}
        bearer = {"Authorization": f"Bearer {http2.post('/api/v1/auth/token', data=form).json()['access_token']}"}
        over_h2 = http2.get(f"/api/v1/users/{created.json()['id']}", headers=bearer)
        over_h1 = http1.get(f"/api/v1/users/{created.json()['id']}", headers=bearer)

    assert (over_h2.status_code, over_h2.http_version) == (200, "HTTP/2")
    assert (over_h1.status_code, over_h1.http_version) == (200, "HTTP/1.1")
    assert over_h2.json() == over_h1.json() == created.json()
    assert over_h2.headers["etag"] == over_h1.headers["etag"]


def test_by_default_only_http1_is_spoken_and_a_silent_connection_is_closed(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "WEB_CONCURRENCY": "1", "REQUEST_READ_TIMEOUT": "1"}
    with serving(env, tmp_path / "serve.log") as client:
        assert client.get("/health/live").http_version == "HTTP/1.1"
        with h2c(str(client.base_url)) as http2, pytest.raises(httpx.RemoteProtocolError):
            http2.get("/health/live")
        with socket.create_connection((client.base_url.host, client.base_url.port), timeout=10) as silent:
            started = time.monotonic()
            assert silent.recv(1) == b""  # closed by granian's head timeout (`auto` waits for the first bytes)
            assert time.monotonic() - started < 5
