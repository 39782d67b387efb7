"""A real OTLP/HTTP trace receiver for the tests: what a collector does with `POST /v1/traces`, on a free port."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KINDS = {Span.SPAN_KIND_SERVER: "server", Span.SPAN_KIND_CONSUMER: "consumer", Span.SPAN_KIND_INTERNAL: "internal"}
STATUSES = {0: "unset", 1: "ok", 2: "error"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, its ids as the hex strings logs and `traceparent` use."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    status: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: list[str]


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


class OtlpReceiver:
    """Collects the spans every exporter pointed at `endpoint` sends it."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404)
                    return
                receiver._receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _receive(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                received.extend(
                    ReceivedSpan(
                        name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        status=STATUSES[span.status.code],
                        attributes={item.key: _value(item.value) for item in span.attributes},
                        resource=resource,
                        events=[event.name for event in span.events],
                    )
                    for span in scope_spans.spans
                )
        with self._lock:
            self.spans.extend(received)

    async def wait_for(
        self, check: Callable[[ReceivedSpan], bool], *, count: int = 1, within: float = 15.0
    ) -> list[ReceivedSpan]:
        """The spans `check` holds for, once there are `count` of them; fails after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            with self._lock:
                found = [span for span in self.spans if check(span)]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"after {within} s, {len(found)} of {count}; all: {self.spans}"
            await asyncio.sleep(0.05)

    @contextmanager
    def running(self) -> Iterator[OtlpReceiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
