"""Tracing across the queue: a job carries the trace it was submitted in, and a real worker process
(`accounts.worker.main`, traced through OTEL_* variables) runs each attempt in a child span of it."""

from __future__ import annotations

import json
import signal

import pytest

from accounts import worker
from accounts.config import Settings
from accounts.core.observability.tracing import start_tracing
from accounts.core.observability.tracing.spans import JOB_TRACE_CONTEXT
from accounts.jobs.services import Jobs
from tests.integration.jobs.support import SpawnWorker, wait_for_status
from tests.integration.jobs.tasks import QUICK
from tests.otlp import OtlpReceiver

OWNER = "user:0196a000-0000-7000-8000-000000000001"


@pytest.mark.usefixtures("no_otel_variables")
async def test_each_attempt_runs_in_a_child_span_of_the_trace_the_job_was_submitted_in(
    job_settings: Settings,
    jobs: Jobs,
    spawn_worker: SpawnWorker,
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    tracing = start_tracing()
    assert tracing is not None
    queue = worker.make_queue(job_settings)
    tracing.carry_context(queue)
    try:
        with tracing.tracer.start_as_current_span("submit") as submitting:
            job_id = (await Jobs(queue, job_settings.job_result_ttl).submit("test_flaky", QUICK, OWNER, failures=1)).id
        enqueued = await queue.job(str(job_id))
    finally:
        await queue.disconnect()
        await tracing.shutdown()
    trace_id = f"{submitting.get_span_context().trace_id:032x}"
    parent_id = f"{submitting.get_span_context().span_id:016x}"
    assert enqueued is not None
    assert list(enqueued.meta[JOB_TRACE_CONTEXT]) == ["traceparent"]
    assert enqueued.meta[JOB_TRACE_CONTEXT]["traceparent"].startswith(f"00-{trace_id}-{parent_id}-")

    # Nothing leaves the worker before it stops: its shutdown must flush the spans.
    process = spawn_worker(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000")
    await wait_for_status(jobs, job_id, "complete")
    process.signal(signal.SIGTERM)
    assert await process.exit_code(within=30) == 0, process.output

    first, second = sorted(
        await receiver.wait_for(
            lambda span: span.kind == "consumer" and span.attributes["messaging.message.id"] == str(job_id), count=2
        ),
        key=lambda span: span.attributes["saq.job.attempt"],
    )
    for attempt in (first, second):
        assert attempt.name == "process test_flaky"
        assert (attempt.trace_id, attempt.parent_span_id) == (trace_id, parent_id)
        assert attempt.resource["service.name"] == "accounts"
    assert (first.status, first.attributes["saq.job.status"], first.events) == ("error", "queued", ["exception"])
    assert (second.status, second.attributes["saq.job.status"], second.events) == ("unset", "complete", [])
    lines = [json.loads(line) for line in process.output.splitlines() if line.startswith("{")]
    [failed] = [line for line in lines if line["event"] == "job attempt failed"]
    assert (failed["trace_id"], failed["span_id"]) == (trace_id, first.span_id)
    said = [(line["trace_id"], line["span_id"]) for line in lines if line["event"] == "flaky attempt"]
    assert said == [(trace_id, first.span_id), (trace_id, second.span_id)]
