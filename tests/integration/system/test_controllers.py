"""/health/live and /health/ready through HTTP, with the real database and with none answering."""

from __future__ import annotations

import asyncio
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]
UNREACHABLE_DATABASE_URL = "postgresql://postgres@127.0.0.1:1/nothing"
SILENT_HOLD_SECONDS = 5


def assert_unavailable(response: Response) -> dict[str, Any]:
    problem = assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
    assert "Traceback" not in response.text
    return problem


@asynccontextmanager
async def client_of(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
async def unreachable() -> AsyncIterator[Client]:
    """An app whose database refuses connections (nothing listens on port 1)."""
    async with client_of(Settings(database_url=UNREACHABLE_DATABASE_URL, ready_timeout=0.5)) as client:
        yield client


class _SilentHandler(socketserver.BaseRequestHandler):
    server: _SilentServer

    def handle(self) -> None:
        self.server.released.wait(SILENT_HOLD_SECONDS)


class _SilentServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SilentHandler)
        self.released = threading.Event()


@pytest.fixture(scope="module")
def silent_database_url() -> Iterator[str]:
    """A URL of a "database" that accepts TCP connections, never answers, and drops them after a while.

    It runs in a thread because the test client blocks the test's event loop while a request runs.
    """
    server = _SilentServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"postgresql://postgres@127.0.0.1:{server.server_address[1]}/nothing"
    server.released.set()
    server.shutdown()
    server.server_close()


# --- liveness -----------------------------------------------------------------------------------


async def test_live_is_200_ok(client: Client) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}


async def test_live_does_not_need_the_database(unreachable: Client) -> None:
    response = await unreachable.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- readiness ----------------------------------------------------------------------------------


async def test_ready_is_200_with_the_database(client: Client) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_answers_many_concurrent_probes(client: Client) -> None:
    responses = await asyncio.gather(*(client.get("/health/ready") for _ in range(30)))
    assert [r.status_code for r in responses] == [200] * 30


async def test_ready_is_503_when_the_database_refuses_connections(unreachable: Client) -> None:
    problem = assert_unavailable(await unreachable.get("/health/ready"))
    assert "0.5" in problem["detail"]
    assert "x-request-id" in (await unreachable.get("/health/ready")).headers


async def test_ready_is_503_within_its_timeout_when_the_database_does_not_answer(silent_database_url: str) -> None:
    async with client_of(Settings(database_url=silent_database_url, ready_timeout=0.5)) as client:
        started = time.perf_counter()
        response = await client.get("/health/ready")
        elapsed = time.perf_counter() - started

        assert_unavailable(response)
        assert elapsed < 3, f"readiness took {elapsed:.1f} s with a 0.5 s timeout"


# --- the API with no database -------------------------------------------------------------------
# A well-formed API key is looked up in the database, so with none answering, an authenticated call is a
# 503 before its handler runs; the public sign-up reaches its handler and fails there.


async def test_listing_users_is_503_not_500_when_the_database_is_down(unreachable: Client, service_key: str) -> None:
    assert_unavailable(await unreachable.get("/api/v1/users", headers={"X-API-Key": service_key}))


async def test_creating_a_user_is_503_not_500_when_the_database_is_down(unreachable: Client, service_key: str) -> None:
    response = await unreachable.post(
        "/api/v1/users", json={"email": "down@example.com", "username": "down"}, headers={"X-API-Key": service_key}
    )
    assert_unavailable(response)


async def test_signing_up_is_503_not_500_when_the_database_is_down(unreachable: Client) -> None:
    response = await unreachable.post(
        "/api/v1/auth/register", json={"email": "down@example.com", "username": "down", "password": "long enough"}
    )
    assert_unavailable(response)


async def test_validation_still_answers_400_when_the_database_is_down(unreachable: Client) -> None:
    response = await unreachable.post(
        "/api/v1/auth/register", json={"email": "down@example.com", "username": "down", "password": "short"}
    )
    assert_problem(response, 400, field="password")


async def test_a_request_without_credentials_is_401_when_the_database_is_down(unreachable: Client) -> None:
    assert_problem(await unreachable.get("/api/v1/users"), 401)


async def test_an_api_request_is_503_promptly_when_the_database_does_not_answer(
    silent_database_url: str, service_key: str
) -> None:
    settings = Settings(database_url=silent_database_url, database_pool_timeout=1, ready_timeout=0.5)
    async with client_of(settings) as client:
        started = time.perf_counter()
        response = await client.get("/api/v1/users", headers={"X-API-Key": service_key})
        elapsed = time.perf_counter() - started

        # The silent server drops the connection after SILENT_HOLD_SECONDS; an answer only then is too late.
        assert elapsed < SILENT_HOLD_SECONDS - 1, f"no answer for {elapsed:.1f} s with DATABASE_POOL_TIMEOUT=1"
        assert_unavailable(response)
