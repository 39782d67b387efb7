"""Errors nobody planned for: a 500 problem that hides the cause from the client and logs it for us.

The log is read from a child process running the app (see `tests/integration/test_logging.py` for why
not with `capfd`). The test-only /boom route is not public: it is called with an API key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.database import insert_api_key
from tests.integration.test_logging import AppRun, Call, Output, boom_route, run_apps
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]
SECRET = "hunter2-do-not-leak"
BOOM_MESSAGE = f"connection string postgresql://admin:{SECRET}@db/accounts"


@pytest.fixture(scope="module")
async def booming(settings: Settings) -> AsyncIterator[Client]:
    """The service's app with one test-only route that raises an unexpected exception."""
    app = create_app(settings)
    app.register(boom_route(BOOM_MESSAGE))
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
async def boom_key(settings: Settings) -> str:
    """The API key the child process calls /boom with."""
    return await insert_api_key(settings.database_url, ["users:read"])


@pytest.fixture(scope="module")
def boomed(settings: Settings, boom_key: str, tmp_path_factory: pytest.TempPathFactory) -> Output:
    """The same app in a child process, asked for /boom twice; its stdout is the log."""
    calls = [
        Call(method="GET", path="/boom", request_id="boom-request-1", as_service=True),
        Call(method="GET", path="/boom", as_service=True),
        Call(method="GET", path="/health/live", request_id="after-boom-1"),
    ]
    return run_apps(
        [AppRun(settings=settings, calls=calls, boom=BOOM_MESSAGE, service_key=boom_key)],
        tmp_path_factory.mktemp("boom"),
    )


# --- 500 ----------------------------------------------------------------------------------------


async def test_an_unexpected_exception_is_a_500_problem_without_details(booming: Client, service_key: str) -> None:
    response = await booming.get("/boom", headers={"X-API-Key": service_key})

    problem = assert_problem(response, 500)
    assert set(problem) == {"type", "title", "status", "detail"}
    assert problem["title"] == "Internal Server Error"
    assert SECRET not in response.text
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    assert "x-request-id" in response.headers


async def test_an_unexpected_exception_is_logged_with_its_traceback_and_request_id(boomed: Output) -> None:
    answer = boomed.answers[0][0]
    assert answer.status == 500
    assert answer.content_type.startswith("application/problem+json")
    assert answer.request_ids == ["boom-request-1"]
    assert SECRET not in answer.text

    errors = boomed.lines_of("boom-request-1", event="unhandled error")
    assert len(errors) == 1, boomed.stdout
    logged = errors[0]
    assert logged["level"] == "error"
    assert logged["method"] == "GET"
    assert logged["path"] == "/boom"
    assert logged["exception"].startswith("Traceback (most recent call last):")
    assert "in boom" in logged["exception"]
    assert f"RuntimeError: {BOOM_MESSAGE}" in logged["exception"]


async def test_the_access_line_of_a_500_follows_its_error_line(boomed: Output) -> None:
    events = [line["event"] for line in boomed.logs if line.get("request_id") == "boom-request-1"]
    assert events == ["unhandled error", "request"]
    assert boomed.lines_of("boom-request-1")[0]["status"] == 500


async def test_a_500_without_a_given_request_id_is_logged_with_the_generated_one(boomed: Output) -> None:
    answer = boomed.answers[0][1]
    assert answer.status == 500
    (request_id,) = answer.request_ids
    assert len(boomed.lines_of(request_id, event="unhandled error")) == 1
    assert len(boomed.lines_of(request_id)) == 1


async def test_nothing_but_json_lines_reach_stdout_or_stderr_on_a_500(boomed: Output) -> None:
    assert len(boomed.logs) == 2 * 2 + 1  # an error and an access line per /boom, one access line for /health/live
    assert boomed.stderr == ""
    assert boomed.answers[0][2].status == 200
    assert boomed.lines_of("after-boom-1", event="unhandled error") == []


async def test_the_api_key_of_a_500_is_not_logged(boomed: Output, boom_key: str) -> None:
    assert [answer.status for answer in boomed.answers[0][:2]] == [500, 500]
    assert boom_key not in boomed.stdout
    assert boom_key not in boomed.stderr


async def test_the_app_keeps_serving_after_a_500(booming: Client, service_key: str) -> None:
    assert (await booming.get("/boom", headers={"X-API-Key": service_key})).status_code == 500
    assert (await booming.get("/health/live")).status_code == 200


async def test_without_credentials_the_route_is_a_401_not_a_500(booming: Client) -> None:
    response = await booming.get("/boom")
    assert_problem(response, 401)
    assert "x-request-id" in response.headers


# --- routing errors -----------------------------------------------------------------------------


async def test_unknown_route_is_a_404_problem_with_a_request_id(client: Client) -> None:
    response = await client.get("/no/such/route")
    assert_problem(response, 404)
    assert response.headers["x-request-id"]


async def test_wrong_method_is_a_405_problem_with_a_request_id(client: Client) -> None:
    response = await client.delete("/health/live")
    assert_problem(response, 405)
    assert response.headers["x-request-id"]
    assert "GET" in response.headers["allow"]


async def test_routing_errors_echo_a_given_request_id(client: Client) -> None:
    not_found = await client.get("/no/such/route", headers={"x-request-id": "trace-404"})
    not_allowed = await client.delete("/health/live", headers={"x-request-id": "trace-405"})
    assert not_found.headers["x-request-id"] == "trace-404"
    assert not_allowed.headers["x-request-id"] == "trace-405"
