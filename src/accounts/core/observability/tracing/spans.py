"""The spans this service makes, and where they go: imported only when tracing is on (see `tracing`).

Each process builds its own tracer provider and hands its tracer to what makes spans, rather than setting
OpenTelemetry's global provider (which can be set once per process): so every app a test process builds
traces on its own. A request's span continues the caller's trace (W3C `traceparent`, or OTEL_PROPAGATORS);
a job carries the trace context of the code that enqueued it in its SAQ `meta`, and each attempt runs in a
span that is a child of it.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import context, propagate
from opentelemetry.context import Context as TraceContext
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_SCHEME
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, set_span_in_context
from saq import Job, Queue
from saq.job import Status
from saq.types import Context

DEFAULT_SERVICE_NAME = "accounts"
JOB_TRACE_CONTEXT = "trace_context"
"""The key of a job's `meta` that holds the enqueuer's trace context (`traceparent`, `tracestate`)."""

_JOB_FAILED = (Status.FAILED, Status.QUEUED)  # QUEUED after an attempt: it failed and will be retried

# The running attempt's span and the token that restores the context; the worker's before_process and
# after_process hooks run in the same task, so they see the same value.
_attempt: ContextVar[tuple[Span, Token[TraceContext]] | None] = ContextVar("job_attempt_span", default=None)


class _AsgiHeaders(Getter[Scope]):
    """Reads propagation headers (asked for in lower case, as ASGI servers give them) from an ASGI scope."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.encode("latin-1")
        return [value.decode("latin-1") for header, value in carrier["headers"] if header == name] or None

    def keys(self, carrier: Scope) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier["headers"]]


_asgi_headers = _AsgiHeaders()


class ServerSpans:
    """One SERVER span per HTTP request, continuing the caller's trace. It is named `METHOD /route/{template}`
    once routing has found the route (just `METHOD` when none matched), so a name never holds ids from a path."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        caller = propagate.extract(scope, getter=_asgi_headers)
        span = self.tracer.start_span(
            method,
            caller,
            kind=SpanKind.SERVER,
            attributes={HTTP_REQUEST_METHOD: method, URL_PATH: scope["path"], URL_SCHEME: scope["scheme"]},
        )

        async def send_recording_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
            await send(message)

        token = context.attach(set_span_in_context(span, caller))
        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            if route := scope.get("path_template"):
                span.update_name(f"{method} {route}")
                span.set_attribute(HTTP_ROUTE, route)
            span.end()
            context.detach(token)


async def _carry_trace_context(job: Job) -> None:
    """SAQ's before-enqueue hook: the job takes the trace context it was enqueued in, if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        job.meta[JOB_TRACE_CONTEXT] = carrier


class Tracing:
    """This process's tracer provider, batching spans to the OTLP/HTTP exporter, and where spans start."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("accounts")

    @classmethod
    def from_env(cls) -> Tracing:
        """Sampler, exporter and batching as the OTEL_* variables say; service.name `accounts` unless they name one."""
        resource = Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME}).merge(OTELResourceDetector().detect())
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # shut down by `shutdown`, once
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    def server_spans(self, app: ASGIApp) -> ASGIApp:
        return ServerSpans(app, self.tracer)

    def carry_context(self, queue: Queue) -> None:
        """Jobs enqueued on `queue` carry the trace context they were enqueued in."""
        queue.register_before_enqueue(_carry_trace_context)

    def start_job_span(self, ctx: Context) -> None:
        """The worker's before_process hook: a CONSUMER span for this attempt, current while the task runs."""
        job = ctx["job"]
        enqueuer = propagate.extract(job.meta.get(JOB_TRACE_CONTEXT) or {})
        span = self.tracer.start_span(
            f"process {job.function}",
            enqueuer,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "saq",
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue.name if job.queue else "",
                "messaging.message.id": job.key,
                "saq.job.attempt": job.attempts,
            },
        )
        _attempt.set((span, context.attach(set_span_in_context(span, enqueuer))))

    def end_job_span(self, ctx: Context) -> None:
        """The worker's after_process hook: the attempt's span ends with its outcome."""
        attempt = _attempt.get()
        if attempt is None:  # an earlier hook failed before this attempt's span started
            return
        span, token = attempt
        _attempt.set(None)
        job = ctx["job"]
        span.set_attribute("saq.job.status", job.status.value)
        if (exception := ctx.get("exception")) is not None:
            span.record_exception(exception)
        if job.status in _JOB_FAILED:
            span.set_status(StatusCode.ERROR, _last_line(job.error))
        span.end()
        context.detach(token)

    async def shutdown(self) -> None:
        """Export what is still batched and stop (in a thread: the export is a blocking HTTP request)."""
        await asyncio.to_thread(self.provider.shutdown)


def _last_line(text: str | None) -> str | None:
    """The gist of SAQ's error text (a traceback's last line: `ValueError: ...`)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:500] if lines else None
