"""Request ids and the logs: X-Request-ID on every response, one JSON access line per request, no bodies
and no credentials.

What the service writes to stdout is read from a child process running the app (`run_apps`), not with
`capfd`: `configure_logging` caches each structlog logger on first use together with the `sys.stdout`
of that moment, so in a pytest session the lines go to whichever capture was active when the first
request was logged, never to a later `capfd`.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar, get
from litestar.handlers import HTTPRouteHandler
from litestar.testing import AsyncTestClient, TestClient

from accounts.app import create_app
from accounts.auth.credentials import new_api_key
from accounts.config import Settings
from tests.database import insert_api_key
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]
ROOT = Path(__file__).resolve().parents[2]
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


# --- the child process --------------------------------------------------------------------------


class Call(msgspec.Struct, kw_only=True):
    """One request to send: with `request_id` as X-Request-ID when given."""

    method: str
    path: str
    request_id: str | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    as_service: bool = False
    """Send the run's `service_key` as X-API-Key."""
    bearer_of: str | None = None
    """Send the access token answered to the earlier call with this request id as `Authorization: Bearer`."""
    body: Any = None
    form: dict[str, str] | None = None
    """A form-encoded body (instead of a JSON `body`)."""


class AppRun(msgspec.Struct, kw_only=True):
    """An app built with `create_app(settings)` and the calls to send it, in order."""

    settings: Settings
    calls: list[Call]
    service_key: str | None = None
    boom: str | None = None
    """If set, a test-only GET /boom is registered that raises RuntimeError with this message."""


class Answer(msgspec.Struct, kw_only=True):
    status: int
    content_type: str
    request_ids: list[str]
    text: str


class Output(msgspec.Struct, kw_only=True):
    answers: list[list[Answer]]
    """Per app, per call."""
    stdout: str
    stderr: str

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Every line on stdout, each of which must be a JSON object."""
        lines = [json.loads(line) for line in self.stdout.splitlines() if line.strip()]
        assert all(isinstance(line, dict) for line in lines), self.stdout
        return lines

    def lines_of(self, request_id: str, event: str = "request") -> list[dict[str, Any]]:
        return [line for line in self.logs if line.get("event") == event and line.get("request_id") == request_id]


def boom_route(message: str) -> HTTPRouteHandler:
    """A test-only route whose handler fails with an exception the service does not know."""

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError(message)

    return boom


def _send(client: TestClient[Litestar], run: AppRun, call: Call, earlier: dict[str, Answer]) -> Answer:
    headers = dict(call.headers or {})
    if call.request_id is not None:
        headers["x-request-id"] = call.request_id
    if call.as_service:
        assert run.service_key is not None, call
        headers["x-api-key"] = run.service_key
    if call.bearer_of is not None:
        headers["authorization"] = f"Bearer {json.loads(earlier[call.bearer_of].text)['access_token']}"
    response = client.request(
        call.method,
        call.path,
        params=call.params,
        headers=headers,
        json=call.body if call.method in {"POST", "PUT", "PATCH"} else None,
        data=call.form,
    )
    return Answer(
        status=response.status_code,
        content_type=response.headers.get("content-type", ""),
        request_ids=response.headers.get_list("x-request-id"),
        text=response.text,
    )


def serve_plan(plan_path: str, answers_path: str) -> None:
    """In the child process: build each app, send its calls, write the answers; the app logs to stdout."""
    logging.getLogger("httpx").disabled = True  # the test client's own request log is not the service's
    answers = []
    for run in msgspec.json.decode(Path(plan_path).read_bytes(), type=list[AppRun]):
        app = create_app(run.settings)
        if run.boom is not None:
            app.register(boom_route(run.boom))
        run_answers: list[Answer] = []
        earlier: dict[str, Answer] = {}
        with TestClient(app, raise_server_exceptions=False) as client:
            for call in run.calls:
                answer = _send(client, run, call, earlier)
                run_answers.append(answer)
                if call.request_id is not None:
                    earlier[call.request_id] = answer
        answers.append(run_answers)
    Path(answers_path).write_bytes(msgspec.json.encode(answers))


def run_apps(runs: list[AppRun], work_dir: Path) -> Output:
    """Run the apps in a fresh Python process and return the answers and everything it wrote."""
    plan, answers = work_dir / "plan.json", work_dir / "answers.json"
    plan.write_bytes(msgspec.json.encode(runs))
    result = subprocess.run(  # noqa: S603 - our own interpreter and test module
        [
            sys.executable,
            "-c",
            "import sys; from tests.integration.test_logging import serve_plan; serve_plan(*sys.argv[1:])",
            str(plan),
            str(answers),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Output(
        answers=msgspec.json.decode(answers.read_bytes(), type=list[list[Answer]]),
        stdout=result.stdout,
        stderr=result.stderr,
    )


# --- the run this module inspects ---------------------------------------------------------------

FULL_NAME = "Zebulon Quixotic-Fairweather"
BIO = "Collector of left-handed teapots since 1887."
BAD_BIO = "Keeper of the violet lighthouse key."
PATCH_BIO = "Now breeds translucent snails."
QUERY_EMAIL = "query.only.person@example.com"
UNKNOWN_USER = "/api/v1/users/01964f8e-0000-7000-8000-000000000000"
SIGN_UP_FULL_NAME = "Ottoline Brackenbury-Vask"
SIGN_UP_BIO = "Cartographer of imaginary tides."
PASSWORD = "Marmalade-Obelisk-4417"
WRONG_PASSWORD = "Quince-Parapet-9083"
UNKNOWN_KEY = new_api_key()[1]
"""Well-formed but in no database."""
BAD_TOKEN = "not-a-jwt-Periwinkle-Ferret-5521"

CALLS = [
    Call(method="GET", path="/health/live", request_id="live-1"),
    Call(method="GET", path="/health/ready", request_id="ready-1"),
    Call(
        method="GET",
        path="/api/v1/users",
        request_id="list-1",
        params={"email": QUERY_EMAIL, "limit": "5"},
        as_service=True,
    ),
    Call(method="GET", path="/api/v1/users", request_id="bad-query-1", params={"limit": "0"}, as_service=True),
    Call(method="GET", path="/no/such/route", request_id="missing-1"),
    Call(method="DELETE", path="/health/live", request_id="wrong-method-1"),
    Call(
        method="POST",
        path="/api/v1/users",
        request_id="create-1",
        body={"email": "zebulon@example.com", "username": "zebulon", "full_name": FULL_NAME, "bio": BIO},
        as_service=True,
    ),
    Call(
        method="POST",
        path="/api/v1/users",
        request_id="create-again-1",
        body={"email": "zebulon@example.com", "username": "zebulon2", "full_name": FULL_NAME, "bio": BIO},
        as_service=True,
    ),
    Call(
        method="POST",
        path="/api/v1/users",
        request_id="create-invalid-1",
        body={"email": "not-an-email", "username": "violet", "full_name": FULL_NAME, "bio": BAD_BIO},
        as_service=True,
    ),
    Call(method="PATCH", path=UNKNOWN_USER, request_id="patch-1", body={"bio": PATCH_BIO}, as_service=True),
    Call(method="GET", path="/api/v1/users", request_id="no-credentials-1", params={"limit": "5"}),
    Call(method="GET", path="/api/v1/users", request_id="unknown-key-1", headers={"X-API-Key": UNKNOWN_KEY}),
    Call(
        method="GET", path="/api/v1/users", request_id="bad-token-1", headers={"Authorization": f"Bearer {BAD_TOKEN}"}
    ),
    Call(
        method="POST",
        path="/api/v1/auth/register",
        request_id="register-1",
        body={
            "email": "ottoline@example.com",
            "username": "ottoline",
            "password": PASSWORD,
            "full_name": SIGN_UP_FULL_NAME,
            "bio": SIGN_UP_BIO,
        },
    ),
    Call(
        method="POST",
        path="/api/v1/auth/token",
        request_id="wrong-password-1",
        form={"grant_type": "password", "username": "ottoline", "password": WRONG_PASSWORD},
    ),
    Call(
        method="POST",
        path="/api/v1/auth/token",
        request_id="log-in-1",
        form={"grant_type": "password", "username": "ottoline", "password": PASSWORD},
    ),
    Call(method="GET", path="/api/v1/users/me", request_id="me-1", bearer_of="log-in-1"),
    Call(method="GET", path="/api/v1/users", request_id="forbidden-1", bearer_of="log-in-1"),
    Call(method="GET", path="/health/live"),
]
"""Sent to the app with the access log on; all but the last carry a request id."""
EXPECTED_STATUS = {
    "live-1": 200,
    "ready-1": 200,
    "list-1": 200,
    "bad-query-1": 400,
    "missing-1": 404,
    "wrong-method-1": 405,
    "create-1": 201,
    "create-again-1": 409,
    "create-invalid-1": 400,
    "patch-1": 404,
    "no-credentials-1": 401,
    "unknown-key-1": 401,
    "bad-token-1": 401,
    "register-1": 201,
    "wrong-password-1": 400,  # RFC 6749: invalid_grant
    "log-in-1": 200,
    "me-1": 200,
    "forbidden-1": 403,
}
QUIET_CALLS = [
    Call(method="GET", path="/health/live", request_id="quiet-1"),
    Call(method="GET", path="/no/such/route", request_id="quiet-2"),
    Call(method="GET", path="/api/v1/users", request_id="quiet-3", params={"limit": "0"}),
]
"""Sent to an app with `access_log=False`."""
WARNING_CALLS = [Call(method="GET", path="/health/live", request_id="warning-1")]
"""Sent, last, to an app with `log_level="WARNING"`: its access lines (level info) must not be written."""


@pytest.fixture(scope="module")
async def logging_key(settings: Settings) -> str:
    """The API key (users:read, users:write) the child process calls the users endpoints with."""
    return await insert_api_key(settings.database_url, ["users:read", "users:write"])


@pytest.fixture(scope="module")
def logged(settings: Settings, logging_key: str, tmp_path_factory: pytest.TempPathFactory) -> Output:
    """One child process, three apps in turn: access log on, access log off, log level WARNING."""
    return run_apps(
        [
            AppRun(settings=settings, calls=CALLS, service_key=logging_key),
            AppRun(settings=msgspec.structs.replace(settings, access_log=False), calls=QUIET_CALLS),
            AppRun(settings=msgspec.structs.replace(settings, log_level="WARNING"), calls=WARNING_CALLS),
        ],
        tmp_path_factory.mktemp("logged"),
    )


# --- X-Request-ID -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "req.1:2_3-4", "A", "x" * 128, "01J9ZQ3V6T8ZB5G0K2M4N6P8R0"],
)
async def test_a_well_formed_request_id_is_echoed(client: Client, request_id: str) -> None:
    response = await client.get("/health/live", headers={"x-request-id": request_id})
    assert response.headers.get_list("x-request-id") == [request_id]


@pytest.mark.parametrize(
    "request_id",
    [
        b"x" * 129,
        b"has space",
        b" leading",
        "n\u00f6n-ascii".encode(),
        "\u65e5\u672c".encode(),
        b"",
        b"semi;colon",
        b"slash/ed",
        b'quote"d',
        b"tab\there",
        b"<script>",
    ],
)
async def test_a_malformed_request_id_is_replaced_by_a_generated_one(client: Client, request_id: bytes) -> None:
    response = await client.get("/health/live", headers={"x-request-id": request_id})
    returned = response.headers.get_list("x-request-id")
    assert len(returned) == 1
    assert returned[0].encode() != request_id
    assert GENERATED_ID.fullmatch(returned[0]), returned


async def test_a_request_id_with_a_trailing_newline_is_replaced(client: Client) -> None:
    response = await client.get("/health/live", headers={"x-request-id": b"abc\n"})
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"]), response.headers.get_list("x-request-id")


async def test_without_a_request_id_each_response_gets_a_new_one(client: Client) -> None:
    first = (await client.get("/health/live")).headers.get_list("x-request-id")
    second = (await client.get("/health/live")).headers.get_list("x-request-id")
    assert len(first) == len(second) == 1
    assert GENERATED_ID.fullmatch(first[0])
    assert GENERATED_ID.fullmatch(second[0])
    assert first != second


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/health/live", {}, 200),
        (
            "POST",
            "/api/v1/auth/register",
            {"json": {"email": "su@example.com", "username": "su", "password": "x"}},
            400,
        ),
        ("GET", "/api/v1/users", {}, 200),
        ("POST", "/api/v1/users", {"json": {"email": "rid@example.com", "username": "rid"}}, 201),
        ("GET", "/api/v1/users", {"params": {"limit": "0"}}, 400),
        ("POST", "/api/v1/users", {"content": b"{", "headers": {"content-type": "application/json"}}, 400),
        ("GET", "/api/v1/users/00000000-0000-4000-8000-000000000000", {}, 404),  # no such user
        ("GET", "/no/such/route", {}, 404),
        ("DELETE", "/health/live", {}, 405),
        ("POST", "/api/v1/users", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
    ],
)
async def test_every_response_has_exactly_one_request_id(
    client: Client, service_key: str, *, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    headers = {"X-API-Key": service_key, **kwargs.get("headers", {})}
    response = await client.request(method, path, **{**kwargs, "headers": headers})
    assert response.status_code == status, response.text
    assert len(response.headers.get_list("x-request-id")) == 1
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": UNKNOWN_KEY}, {"X-API-Key": "malformed"}, {"Authorization": f"Bearer {BAD_TOKEN}"}],
    ids=["none", "unknown-key", "malformed-key", "bad-token"],
)
async def test_a_401_has_exactly_one_request_id(client: Client, headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/users", headers=headers)
    assert_problem(response, 401)
    assert len(response.headers.get_list("x-request-id")) == 1
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


async def test_a_401_echoes_a_given_request_id(client: Client) -> None:
    response = await client.get("/api/v1/users", headers={"x-request-id": "trace-401"})
    assert_problem(response, 401)
    assert response.headers.get_list("x-request-id") == ["trace-401"]


# --- what the app writes ------------------------------------------------------------------------


async def test_every_line_on_stdout_is_a_json_log_record(logged: Output) -> None:
    assert logged.logs
    for line in logged.logs:
        assert isinstance(line["event"], str), line
        assert line["level"] in {"debug", "info", "warning", "error", "critical"}, line
        assert line["timestamp"].endswith("Z"), line
    assert "Traceback" not in logged.stdout
    assert "Traceback" not in logged.stderr


async def test_the_calls_got_the_expected_statuses_and_ids(logged: Output) -> None:
    for call, answer in zip(CALLS, logged.answers[0], strict=True):
        if call.request_id is not None:
            assert answer.status == EXPECTED_STATUS[call.request_id], (call, answer)
            assert answer.request_ids == [call.request_id]


@pytest.mark.parametrize("call", [c for c in CALLS if c.request_id], ids=lambda c: c.request_id)
async def test_one_access_line_per_request(logged: Output, call: Call) -> None:
    assert call.request_id is not None
    lines = logged.lines_of(call.request_id)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["method"] == call.method
    assert line["path"] == call.path
    assert line["status"] == EXPECTED_STATUS[call.request_id]
    assert isinstance(line["duration_ms"], int | float)
    assert 0 <= line["duration_ms"] < 60_000
    assert line["level"] == "info"


async def test_the_access_line_of_a_request_without_an_id_has_the_generated_one(logged: Output) -> None:
    answer = logged.answers[0][-1]
    assert len(answer.request_ids) == 1
    lines = logged.lines_of(answer.request_ids[0])
    assert len(lines) == 1
    assert lines[0]["path"] == "/health/live"
    assert lines[0]["status"] == 200


async def test_there_is_one_access_line_per_call_and_no_more(logged: Output) -> None:
    warned = {call.request_id for call in WARNING_CALLS}
    requests = [line for line in logged.logs if line.get("event") == "request" and line["request_id"] not in warned]
    assert len(requests) == len(CALLS)


async def test_the_access_line_has_no_query_string(logged: Output) -> None:
    assert "query.only.person" not in logged.stdout
    assert "limit=" not in logged.stdout


async def test_no_access_line_when_the_access_log_is_off(logged: Output) -> None:
    for call, answer in zip(QUIET_CALLS, logged.answers[1], strict=True):
        assert call.request_id is not None
        assert answer.request_ids == [call.request_id]
        assert logged.lines_of(call.request_id) == []
        assert call.request_id not in logged.stdout


@pytest.mark.parametrize(
    "text",
    [
        FULL_NAME,
        BIO,
        BAD_BIO,
        PATCH_BIO,
        "teapots",
        "violet lighthouse",
        "Zebulon",
        SIGN_UP_FULL_NAME,
        SIGN_UP_BIO,
        "imaginary tides",
        "Ottoline",
        "ottoline@example.com",
    ],
)
async def test_request_bodies_are_not_logged(logged: Output, text: str) -> None:
    assert text not in logged.stdout
    assert text not in logged.stderr


async def test_no_password_key_or_token_is_logged(logged: Output, logging_key: str) -> None:
    (log_in,) = [answer for call, answer in zip(CALLS, logged.answers[0], strict=True) if call.request_id == "log-in-1"]
    tokens = json.loads(log_in.text)
    secrets = {
        "password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "service key": logging_key,
        "unknown key": UNKNOWN_KEY,
        "bad token": BAD_TOKEN,
        "access token": tokens["access_token"],
        "access token signature": tokens["access_token"].rsplit(".", 1)[1],
        "refresh token": tokens["refresh_token"],
    }
    for name, secret in secrets.items():
        assert secret not in logged.stdout, name
        assert secret not in logged.stderr, name


async def test_an_app_configured_for_warnings_writes_no_info_lines(logged: Output) -> None:
    for call in WARNING_CALLS:
        assert call.request_id is not None
        assert logged.lines_of(call.request_id) == [], "an app configured for WARNING wrote an info line"
