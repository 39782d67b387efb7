"""Fixtures of the fault tests: a migrated database of the test's own, `accounts serve` on whatever the test
points it at, and the figures each case reports.

A fault test breaks something the service depends on, so it only ever breaks what is its own: its own
database on the shared server, or servers it started itself (a PostgreSQL cluster, a redis-server). What the
fault tests share besides fixtures is in tests/faults/support.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.database import CreateDatabase, migrate
from tests.faults.support import Figures, RecordFigures, Serve
from tests.server import serving


@pytest.fixture
async def own_database(create_database: CreateDatabase) -> str:
    """A migrated database on the shared server that no other test uses, so its connections may be killed."""
    url = await create_database()
    await migrate(url)
    return url


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """`with serve(DATABASE_URL=url) as base_url:` `accounts serve` with two workers and these variables (the
    queue on PostgreSQL unless REDIS_URL is given), logging to server.log in the test's folder; stopped, and
    checked to have stopped cleanly, when the block ends."""

    @contextmanager
    def start(**env: str) -> Iterator[str]:
        # An empty REDIS_URL is unset: the shell's own REDIS_URL must not reach a test's server.
        with serving({"WEB_CONCURRENCY": "2", "REDIS_URL": "", **env}, tmp_path / "server.log") as client:
            yield str(client.base_url)

    return start


@pytest.fixture
def record_figures(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> RecordFigures:
    """`record_figures({...})`: a case's figures on one line of stdout (shown with `-s`), in the JUnit XML
    (`--junitxml`), and in pytest's cache as faults/<test name> (`pytest --cache-show 'faults/*'`), so a
    report can quote them after the run, failed or not."""

    def record(figures: Figures) -> None:
        name = request.node.name
        print(f"\n[{name}] " + ", ".join(f"{figure}: {value}" for figure, value in figures.items()))
        for figure, value in figures.items():
            record_property(figure, value)
        cache = getattr(request.config, "cache", None)  # None with `-p no:cacheprovider`
        if cache is not None:
            cache.set(f"faults/{name}", dict(figures))

    return record
