"""What the fault tests share, fixtures aside: the types of their fixtures and waiting for the service to recover."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager

from tests.integration.auth.support import eventually

Figures = Mapping[str, int | float | str | None]
RecordFigures = Callable[[Figures], None]
Serve = Callable[..., AbstractContextManager[str]]


async def seconds_until(check: Callable[[], Awaitable[bool]], *, within: float) -> float | None:
    """Seconds until `check` holds; None if it did not within `within` seconds, so that the figures are
    recorded before the assertion that fails."""
    try:
        return await eventually(check, within=within)
    except AssertionError:
        return None
