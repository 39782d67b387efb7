"""What the webhook tests share, fixtures aside: a real HTTP receiver that verifies every delivery with the
`standardwebhooks` library, paths, and waiting for what it received.

The receiver is Python's own threaded HTTP server on a port of its own; it can answer with an error, redirect,
or go away entirely (its socket closed) and come back on the same port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

WEBHOOKS = "/api/v1/webhooks"


@dataclass
class Received:
    webhook_id: str
    event: dict[str, Any]
    signatures: int
    """How many `v1,` signatures the header carried (two during a secret rotation's overlap)."""
    at: float
    """time.time() when it arrived."""


@dataclass
class Receiver:
    """An endpoint that answers `status` (a 2xx when deliveries should succeed) and keeps every delivery whose
    signature one of `secrets` verifies; a delivery that fails verification is answered 401 and counted."""

    secrets: list[str] = field(default_factory=list)
    status: int = 204
    location: str = ""
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    requests: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks?team=7"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                event = receiver.verify(body, headers)
                with receiver._lock:
                    receiver.requests += 1
                    if event is None:
                        receiver.refused += 1
                    elif 200 <= receiver.status < 300:
                        signatures = len(headers["webhook-signature"].split(" "))
                        receiver.received.append(Received(headers["webhook-id"], event, signatures, time.time()))
                    status = 401 if event is None else receiver.status
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0" if status < 400 else "5")
                self.end_headers()
                if status >= 400:
                    self.wfile.write(b"nope!")

            def log_message(self, *_: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the socket: deliveries meet a refused connection until `start` again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verify(self, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        for secret in self.secrets:
            try:
                return dict(Webhook(secret).verify(body, headers))
            except WebhookVerificationError:
                continue
        return None

    def unique(self) -> dict[str, Received]:
        """What arrived, de-duplicated by `webhook-id` (the first of each)."""
        with self._lock:
            firsts: dict[str, Received] = {}
            for item in self.received:
                firsts.setdefault(item.webhook_id, item)
            return firsts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def eventually(check: Callable[[], Any], *, within: float = 15.0, message: str = "") -> Any:
    """Poll `check` until it returns something truthy; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, message or f"not within {within} s"
        await asyncio.sleep(0.05)
    return result


def event_json(received: Received) -> str:
    return json.dumps(received.event, sort_keys=True)
