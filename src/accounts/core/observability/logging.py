"""Logging: structlog lines (JSON, or console on a TTY) and the per-request context and access log."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from accounts.config import Settings
from accounts.core.observability.metrics import UNMATCHED, RequestMetrics

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_json_encoder = msgspec.json.Encoder(enc_hook=str)

# One context variable, set once per request: cheaper on the hot path than structlog's bind_contextvars.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if (current := request_id.get()) is not None:
        event.setdefault("request_id", current)
    return event


def _trace_ids() -> structlog.typing.Processor:
    """A processor adding the current span's `trace_id` and `span_id`; installed only when tracing is on,
    so a process that does not trace imports no OpenTelemetry."""
    from opentelemetry.trace import get_current_span  # noqa: PLC0415

    def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        current = get_current_span().get_span_context()
        if current.is_valid:
            event.setdefault("trace_id", format(current.trace_id, "032x"))
            event.setdefault("span_id", format(current.span_id, "016x"))
        return event

    return add_trace_ids


def _json_bytes(event: dict[str, Any], **_: Any) -> bytes:
    return _json_encoder.encode(event)


def _json_text(event: dict[str, Any], **_: Any) -> str:
    return _json_encoder.encode(event).decode()


GRANIAN_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"_granian": {"handlers": [], "propagate": True}},
}
"""Lets granian's own records reach the root handler that `configure_logging` installs."""


def configure_logging(settings: Settings, *, trace_ids: bool = False) -> None:
    """Send structlog and standard-library records (Litestar, SQLAlchemy, granian) to stdout as one format;
    with `trace_ids` (tracing on), each line made inside a span carries its trace and span ids."""
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stdout.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if trace_ids:
        shared.insert(2, _trace_ids())
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        render_bytes: structlog.typing.Processor = structlog.processors.JSONRenderer(serializer=_json_bytes)
        render_text: structlog.typing.Processor = structlog.processors.JSONRenderer(serializer=_json_text)
    else:
        render_bytes = render_text = structlog.dev.ConsoleRenderer()
    level = logging.getLevelNamesMapping()[settings.log_level]
    structlog.configure(
        processors=[*shared, render_bytes],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory() if as_json else structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,  # module-level loggers follow a later configure_logging
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, render_text],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RequestContextMiddleware:
    """Gives every request an id (a well-formed `X-Request-ID` or a new one), returns it on every
    response, binds it to the log context, counts the request in the metrics (by route template) and,
    unless switched off, writes one access-log line."""

    def __init__(self, app: ASGIApp, *, metrics: RequestMetrics, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        # Bound now, after configure_logging, so the hot path skips structlog's lazy proxy.
        self.access_log = structlog.get_logger("accounts.access").bind()
        # New ids: a random per-process prefix and a counter, 32 hex digits; unique without a syscall each.
        self._prefix = secrets.token_hex(8)
        self._serial = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        rid = next((value for name, value in scope["headers"] if name == REQUEST_ID_HEADER), None)
        if rid is None or not _VALID_REQUEST_ID.fullmatch(rid):
            rid = f"{self._prefix}{next(self._serial):016x}".encode()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if isinstance(headers, list):
                    headers.append((REQUEST_ID_HEADER, rid))
                else:
                    message["headers"] = [*headers, (REQUEST_ID_HEADER, rid)]
            await send(message)

        token = request_id.set(rid.decode())
        metrics = self.metrics
        metrics.in_flight += 1
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            duration = time.perf_counter() - started
            metrics.in_flight -= 1
            metrics.observe(scope["method"], scope.get("path_template") or UNMATCHED, status, duration)
            if self.log_requests:
                self.access_log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(duration * 1000, 2),
                )
            request_id.reset(token)
