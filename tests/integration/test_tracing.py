"""OpenTelemetry tracing (core/observability/tracing): off by default and then nothing of it is loaded; on, each request
has a server span named by its route that continues the caller's trace, its log lines carry the trace id,
and a job it submits runs in a child span. Spans go over OTLP/HTTP to a real receiver (tests/otlp.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from accounts.core.observability.logging import configure_logging
from tests.database import insert_api_key
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.server import serving

Client = AsyncTestClient[Litestar]
ROOT = Path(__file__).resolve().parents[2]
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
USER_PATH = "/api/v1/users/0196a000-0000-7000-8000-00000000abcd"


# --- off ----------------------------------------------------------------------------------------

TRACING_MODULES = (
    "accounts.core.observability.tracing.spans",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "opentelemetry.trace",
    "opentelemetry.context",
    "opentelemetry.propagate",
)
"""What tracing loads. (Litestar itself, building any app, probes for its own OpenTelemetry plugin, which loads
`opentelemetry.semconv`'s HTTP attribute names before it finds the ASGI instrumentation missing.)"""

BUILD_APP_AND_WORKER = """
import json, sys
from accounts.app import create_app
from accounts.config import Settings
from accounts.worker import make_queue, make_worker

settings = Settings(database_url=sys.argv[1], log_format="json")
app = create_app(settings)
make_worker(settings, make_queue(settings))
tracing = ("opentelemetry", "accounts.core.observability.tracing")
loaded = sorted(name for name in sys.modules if name.startswith(tracing))
print(json.dumps({"handler": type(app.asgi_handler).__name__, "loaded": loaded}))
"""


def build_in_a_fresh_process(database_url: str, otel: dict[str, str]) -> dict[str, Any]:
    """What a new process that builds the app and a worker under `otel` has loaded and wrapped."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")} | otel
    done = subprocess.run(  # noqa: S603  # this interpreter, this test's script
        [sys.executable, "-c", BUILD_APP_AND_WORKER, database_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    built: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return built


@pytest.mark.parametrize(
    "otel",
    [
        {},
        {"OTEL_SERVICE_NAME": "accounts", "OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"},
    ],
    ids=["default", "only-sdk-settings", "sdk-disabled", "exporter-none"],
)
def test_tracing_off_loads_no_opentelemetry_and_adds_no_middleware(database_url: str, otel: dict[str, str]) -> None:
    built = build_in_a_fresh_process(database_url, otel)
    assert built["handler"] == "Edge"
    assert [name for name in built["loaded"] if name.startswith(TRACING_MODULES)] == []


def test_tracing_on_wraps_the_app_outermost(database_url: str) -> None:
    built = build_in_a_fresh_process(database_url, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert built["handler"] == "ServerSpans"
    assert {"accounts.core.observability.tracing.spans", "opentelemetry.sdk.trace"} <= set(built["loaded"])


# --- on, in-process -----------------------------------------------------------------------------


@pytest.fixture
async def traced(
    settings: Settings, receiver: OtlpReceiver, no_otel_variables: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Client]:
    """An app traced to `receiver`, with spans sent every 50 ms, and a test-only GET /boom that fails."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "accounts-eu")
    app = create_app(settings)

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("the frobnicator is out of order")

    app.register(boom)
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        yield client
    configure_logging(settings)  # later tests' apps log as before, without the trace processor


def server_spans(receiver: OtlpReceiver, path: str) -> list[ReceivedSpan]:
    return [span for span in receiver.spans if span.kind == "server" and span.attributes["url.path"] == path]


async def test_a_request_continues_the_callers_trace_in_a_span_named_by_its_route(
    traced: Client, receiver: OtlpReceiver
) -> None:
    response = await traced.get(USER_PATH, headers={"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"})
    assert response.status_code == 401

    [span] = await receiver.wait_for(lambda span: span.attributes.get("url.path") == USER_PATH)
    assert span.name == "GET /api/v1/users/{user_id}"
    assert (span.kind, span.trace_id, span.parent_span_id) == ("server", CALLER_TRACE, CALLER_SPAN)
    assert span.attributes == {
        "http.request.method": "GET",
        "http.route": "/api/v1/users/{user_id}",
        "http.response.status_code": 401,
        "url.path": USER_PATH,
        "url.scheme": "http",
    }
    assert span.status == "unset", "a 4xx is the caller's error, not the server's"
    assert span.resource["service.name"] == "accounts-eu"


async def test_a_request_without_traceparent_starts_a_new_trace(traced: Client, receiver: OtlpReceiver) -> None:
    for _ in range(2):
        assert (await traced.get("/health/live")).status_code == 200

    spans = await receiver.wait_for(lambda span: span.name == "GET /health/live", count=2)
    assert [span.parent_span_id for span in spans] == ["", ""]
    assert len({span.trace_id for span in spans}) == 2
    assert CALLER_TRACE not in {span.trace_id for span in spans}
    assert all(len(span.trace_id) == 32 and int(span.trace_id, 16) for span in spans)


async def test_an_unrouted_path_is_named_by_its_method_alone(traced: Client, receiver: OtlpReceiver) -> None:
    assert (await traced.get("/no/such/0196a000")).status_code == 404

    [span] = await receiver.wait_for(lambda span: span.attributes.get("url.path") == "/no/such/0196a000")
    assert span.name == "GET"
    assert "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 404


async def test_a_500_marks_the_span_as_an_error(traced: Client, receiver: OtlpReceiver, service_key: str) -> None:
    assert (await traced.get("/boom", headers={"X-API-Key": service_key})).status_code == 500

    [span] = await receiver.wait_for(lambda span: span.name == "GET /boom")
    assert span.status == "error"
    assert span.attributes["http.response.status_code"] == 500


# --- on, `accounts serve` with its in-process worker --------------------------------------------


def log_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_a_served_request_and_the_job_it_submits_are_one_trace_exported_at_shutdown(
    database_url: str, receiver: OtlpReceiver, no_otel_variables: None, tmp_path: Path
) -> None:
    key = await insert_api_key(database_url, ["users:read"])
    env = {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_CONCURRENCY": "1",
        "WORKER_IN_PROCESS": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing leaves before the shutdown: it must flush
    }
    log = tmp_path / "serve.log"
    with serving(env, log) as client:
        headers = {"X-API-Key": key}
        submitted = client.post("/api/v1/users/exports", headers=headers | {"traceparent": TRACEPARENT})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 30
        while (status := client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()["status"]) != "complete":
            assert status in ("queued", "active"), status
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        assert receiver.spans == []

    [request] = await receiver.wait_for(lambda span: span.name == "POST /api/v1/users/exports")
    # Only the export's attempt: the in-process worker may also have run a scheduled job (flush_outbox) meanwhile.
    [job] = await receiver.wait_for(lambda span: span.kind == "consumer" and span.name == "process export_users")
    assert (request.trace_id, request.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert request.attributes["http.response.status_code"] == 202
    assert request.resource["service.name"] == "accounts"
    assert request.resource["deployment.environment.name"] == "test"
    assert job.name == "process export_users"
    assert (job.trace_id, job.parent_span_id) == (CALLER_TRACE, request.span_id)
    assert job.status == "unset"
    assert job.attributes["messaging.message.id"] == job_id
    assert job.attributes["saq.job.status"] == "complete"
    assert job.attributes["saq.job.attempt"] == 1
    polls = [span for span in receiver.spans if span.name == "GET /api/v1/jobs/{job_id}"]
    assert polls
    assert all(span.trace_id != CALLER_TRACE and span.parent_span_id == "" for span in polls)

    lines = log_lines(log)
    [access] = [line for line in lines if line.get("path") == "/api/v1/users/exports"]
    assert (access["trace_id"], access["span_id"]) == (CALLER_TRACE, request.span_id)
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    assert any(line["event"] == "users exported" for line in job_lines)
    assert all((line["trace_id"], line["span_id"]) == (CALLER_TRACE, job.span_id) for line in job_lines)
    untraced = [line for line in lines if line.get("event") == "request" and line["path"].startswith("/api/v1/jobs/")]
    assert {line["trace_id"] for line in untraced} == {span.trace_id for span in polls}
