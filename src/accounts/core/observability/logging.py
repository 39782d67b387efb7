"""Logging: structlog lines (JSON, or console on a TTY), each made in a request carrying its id (set by the edge,
accounts.core.http.edge, which also writes the access log)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import msgspec
import structlog

from accounts.config import Settings

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
