"""The request body deadline (accounts.core.http.bodies.with_body_deadline) on uvloop, the server's loop: a read
that waits too long is a BodyTimeout, and reads that do not wait leave nothing behind (uvloop keeps a cancelled
timer alive until the time it was set for, so a timer per read would keep objects alive for every request)."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
import uvloop

from accounts.core.http.bodies import BodyTimeout, with_body_deadline

BODY = {"type": "http.request", "body": b'{"bio": "x"}', "more_body": False}
SCOPE: dict[str, Any] = {"type": "http"}


async def read_body(scope: Any, receive: Any, send: Any) -> None:
    await receive()


async def stalled() -> dict[str, Any]:
    """A client that sent its head and nothing more."""
    await asyncio.sleep(30)
    return BODY


def timers() -> int:
    gc.collect()
    return sum(1 for each in gc.get_objects() if type(each).__name__ == "TimerHandle")


def test_bodies_that_arrive_at_once_leave_no_timer_behind() -> None:
    async def main() -> int:
        app = with_body_deadline(read_body, 20)

        async def receive() -> dict[str, Any]:
            return BODY

        before = timers()
        for _ in range(1000):
            await app(SCOPE, receive, None)  # type: ignore[arg-type]
        return timers() - before

    assert uvloop.run(main()) <= 1, "at most the deadlines' own tick"


def test_a_body_that_stops_arriving_is_a_timeout_within_its_deadline_and_a_tick() -> None:
    async def main() -> float:
        app = with_body_deadline(read_body, 1)

        started = time.monotonic()
        with pytest.raises(BodyTimeout):
            await app(SCOPE, stalled, None)  # type: ignore[arg-type]
        return time.monotonic() - started

    took = uvloop.run(main())
    assert 1 <= took < 1.6, took


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        app = with_body_deadline(read_body, 5)

        task = asyncio.create_task(app(SCOPE, stalled, None))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    uvloop.run(main())
