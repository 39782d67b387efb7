"""Every guard of every route is a coroutine function: Litestar runs a plain function guard in its thread pool, a
hand-off to a thread and back on each guarded request (make bench scenario 3: 429 -> 360 us of server CPU)."""

from __future__ import annotations

import inspect

from litestar import Litestar
from litestar.routes import HTTPRoute


def test_every_guard_runs_on_the_event_loop(app: Litestar) -> None:
    guards = [
        (handler.handler_name, guard)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        for guard in handler.resolve_guards()
    ]
    assert len(guards) > 50  # the admin, scope and user guards of the API's routes
    assert [name for name, guard in guards if not inspect.iscoroutinefunction(guard)] == []
