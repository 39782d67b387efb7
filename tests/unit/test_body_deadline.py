"""The request body deadline (accounts.core.http.bodies.BodyDeadlines) on uvloop, the server's loop: a read
that waits too long is a BodyTimeout, and reads that do not wait leave nothing behind (uvloop keeps a cancelled
timer alive until the time it was set for, so a timer per read would keep objects alive for every request)."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
import uvloop

from accounts.core.http.bodies import BodyDeadlines, BodyTimeout

BODY = {"type": "http.request", "body": b'{"bio": "x"}', "more_body": False}


async def read_body(deadlines: BodyDeadlines, receive: Any) -> None:
    await deadlines.bound(receive)()


async def stalled() -> dict[str, Any]:
    """A client that sent its head and nothing more."""
    await asyncio.sleep(30)
    return BODY


def timers() -> int:
    gc.collect()
    return sum(1 for each in gc.get_objects() if type(each).__name__ == "TimerHandle")


def test_bodies_that_arrive_at_once_leave_no_timer_behind() -> None:
    async def main() -> int:
        deadlines = BodyDeadlines(20)

        async def receive() -> dict[str, Any]:
            return BODY

        before = timers()
        for _ in range(1000):
            await read_body(deadlines, receive)
        return timers() - before

    assert uvloop.run(main()) <= 1, "at most the deadlines' own tick"


def test_a_body_that_stops_arriving_is_a_timeout_within_its_deadline_and_a_tick() -> None:
    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(BodyTimeout):
            await read_body(BodyDeadlines(1), stalled)
        return time.monotonic() - started

    took = uvloop.run(main())
    assert 1 <= took < 1.6, took


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        task = asyncio.create_task(read_body(BodyDeadlines(5), stalled))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    uvloop.run(main())
