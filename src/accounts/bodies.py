"""Request bodies arrive within a deadline: a client that stops sending one part-way gets a 408 and loses the
connection, instead of holding a socket and a worker slot for as long as it likes.

granian bounds the time to send the request head (REQUEST_READ_TIMEOUT, set by `accounts serve`) but has no
such bound for the body, so the app bounds the wait for each chunk of it the same way (as nginx's
client_body_timeout does). Once the body is complete, `receive` is passed through untouched: a response that
waits on it for the client to disconnect (a download) waits as long as it needs.
"""

from __future__ import annotations

import asyncio

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send


class BodyTimeout(Exception):
    """408: the client stopped sending its request body."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request body stopped arriving: nothing came for {seconds:g} s.")


def with_body_deadline(app: ASGIApp, seconds: float) -> ASGIApp:
    """`app`, with each wait for a chunk of an HTTP request body bounded by `seconds` (BodyTimeout after)."""

    async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        complete = False

        async def receive_within_deadline() -> ReceiveMessage:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(seconds):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(seconds) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await app(scope, receive_within_deadline, send)

    return bounded
