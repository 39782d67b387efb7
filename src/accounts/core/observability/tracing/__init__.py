"""OpenTelemetry tracing: off unless the standard OTEL_* variables ask for it.

On when `OTEL_TRACES_EXPORTER=otlp`, or when it is unset and an OTLP endpoint is given
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); off when `OTEL_SDK_DISABLED=true`
or `OTEL_TRACES_EXPORTER=none`. Every other OTEL_* variable (service name, resource attributes, sampler,
batch schedule, headers, timeout) is read by the OpenTelemetry SDK itself. This module imports none of
OpenTelemetry: a process that does not trace loads none of it (`spans` does, when on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from accounts.config import ConfigError

if TYPE_CHECKING:
    from accounts.core.observability.tracing.spans import Tracing

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_SHIPPED_PROTOCOL = "http/protobuf"


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether `environ` switches tracing on; raises ConfigError for an exporter or protocol not shipped."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in ("", "otlp", "none"):
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: expected otlp or none")
    wanted = exporter == "otlp" or (exporter == "" and any(environ.get(name, "").strip() for name in _ENDPOINTS))
    # The more specific variable wins, as in the SDK; only the OTLP/HTTP protobuf exporter is installed.
    protocol = next(((name, value) for name in _PROTOCOLS if (value := environ.get(name, "").strip())), None)
    if wanted and protocol is not None and protocol[1] != _SHIPPED_PROTOCOL:
        raise ConfigError(f"{protocol[0]}={protocol[1]!r}: expected {_SHIPPED_PROTOCOL}")
    return wanted


def start_tracing() -> Tracing | None:
    """This process's tracing (a tracer provider exporting over OTLP/HTTP), or None when it is off."""
    if not tracing_requested(os.environ):
        return None
    from accounts.core.observability.tracing.spans import Tracing  # noqa: PLC0415  # OpenTelemetry is loaded only when tracing

    return Tracing.from_env()
