"""The edge: the one ASGI wrapper every HTTP request passes through before routing, so 404s and 405s get it too.

It gives the request an id (a well-formed `X-Request-ID`, or a new one) returned on every response and bound to the
log context, bounds the wait for each chunk of its body (accounts.core.http.bodies), counts it in the metrics by
route template, writes its access-log line unless switched off, and makes it the current request for code with no
request in hand (`current_request`: the events' actor). One wrapper, not one per concern: each layer of the stack
costs every request a coroutine and a `send` hand-off.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from contextvars import ContextVar

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from accounts.core.http.bodies import BodyDeadlines
from accounts.core.observability.logging import request_id
from accounts.core.observability.metrics import UNMATCHED, RequestMetrics

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

current_request: ContextVar[Scope | None] = ContextVar("current_request", default=None)
"""The ASGI scope of the request being served in this context (None outside requests): its `user` is the caller
once authenticated (accounts.core.security.caller)."""


class Edge:
    def __init__(self, app: ASGIApp, *, metrics: RequestMetrics, log_requests: bool, body_timeout: float) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.deadlines = BodyDeadlines(body_timeout)
        # Bound now, after configure_logging, so the hot path skips structlog's lazy proxy.
        self.access_log = structlog.get_logger("accounts.access").bind()
        # New ids: a random per-process prefix and a counter, 32 hex digits; unique without a syscall each.
        self._prefix = secrets.token_hex(8)
        self._serial = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                rid = value.decode() if _VALID_REQUEST_ID.fullmatch(value) else None
                break
        else:
            rid = None
        if rid is None:
            rid = f"{self._prefix}{next(self._serial):016x}"
        returned = (REQUEST_ID_HEADER, rid.encode())
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if isinstance(headers, list):
                    headers.append(returned)
                else:
                    message["headers"] = [*headers, returned]
            await send(message)

        id_token = request_id.set(rid)
        request_token = current_request.set(scope)
        metrics = self.metrics
        metrics.in_flight += 1
        started = time.perf_counter()
        try:
            await self.app(scope, self.deadlines.bound(receive), send_with_request_id)
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
            current_request.reset(request_token)
            request_id.reset(id_token)
