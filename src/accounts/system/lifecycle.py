"""The server's lifecycle: the database checks before `accounts serve` or `accounts worker` starts, and the drain
on SIGTERM (readiness answers 503 while requests are still served, then granian stops)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from accounts.config import Settings
from accounts.core.db import sqlalchemy_config

if TYPE_CHECKING:
    from granian.server.common import AbstractServer

log = structlog.get_logger("accounts.lifecycle")

DRAINING_MARK = "draining"
"""File the main process of `accounts serve` creates in the folder its workers share when it gets SIGTERM."""


class DatabaseNotReady(Exception):
    """The database cannot be used by this release; the message is one line for the operator."""


def is_draining(settings: Settings) -> bool:
    """Whether this server got SIGTERM and is waiting for load balancers to stop sending it requests."""
    return settings.metrics_dir is not None and os.path.exists(os.path.join(settings.metrics_dir, DRAINING_MARK))


def drain_on_sigterm(server: AbstractServer[Any], shared_dir: Path, drain_seconds: int) -> None:
    """On SIGTERM, mark the server draining (GET /health/ready answers 503) and keep serving for `drain_seconds`,
    so load balancers stop sending requests before the listener closes; then stop granian as it stops on SIGINT.

    Granian then closes the listener at once, lets in-flight requests finish (up to its workers_kill_timeout),
    runs each worker's lifespan shutdown (the pools close) and exits 0. SIGINT during the drain stops at once.
    """
    mark = shared_dir / DRAINING_MARK
    mark.unlink(missing_ok=True)  # a run killed while draining must not leave this one unready
    started = threading.Event()

    def drain() -> None:
        mark.touch()
        log.info("draining: /health/ready answers 503, requests are still served", seconds=drain_seconds)
        time.sleep(drain_seconds)
        server.signal_handler_interrupt()  # type: ignore[no-untyped-call]  # granian's stop, as on SIGINT

    def on_sigterm(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        if not started.is_set():  # a second SIGTERM neither restarts nor shortens the drain
            started.set()
            threading.Thread(target=drain, name="drain", daemon=True).start()

    # Granian installs its own SIGTERM handler as it starts; this hook runs just after, before the workers spawn.
    server.on_startup(lambda: signal.signal(signal.SIGTERM, on_sigterm))


def check_database(settings: Settings) -> None:
    """Raise DatabaseNotReady unless the database answers within DATABASE_CONNECT_TIMEOUT and its schema is at the
    head of this release's migrations. A newer schema is accepted: migrations stay compatible with the release
    before, which keeps running (and may restart) during a rolling update."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only the start-up check needs Alembic

    current = schema_revisions(settings)
    script = ScriptDirectory(str(sqlalchemy_config(settings).alembic_config.script_location))
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    if current != heads and current <= known:
        at = ", ".join(sorted(current)) or "none (no migration applied)"
        raise DatabaseNotReady(
            f"the database schema at {database_address(settings)} is at revision {at} but this release needs "
            f"{', '.join(sorted(heads))}: run `accounts database upgrade` (make migrate)"
        )


def schema_revisions(settings: Settings) -> set[str]:
    """The migrations' revisions the database records; DatabaseNotReady if it does not answer within
    DATABASE_CONNECT_TIMEOUT."""
    return asyncio.run(_schema_revisions(settings, sqlalchemy_config(settings).alembic_config.version_table_name))


async def _schema_revisions(settings: Settings, version_table: str) -> set[str]:
    where = database_address(settings)
    try:
        async with asyncio.timeout(settings.database_connect_timeout):
            # No statement cache: one query, and PgBouncer in transaction mode keeps no named statements.
            connection = await asyncpg.connect(settings.asyncpg_database_url, statement_cache_size=0)
            try:
                rows = await connection.fetch(f'SELECT version_num FROM "{version_table}"')  # noqa: S608 - our own table
            except asyncpg.UndefinedTableError:
                return set()
            finally:
                await connection.close()
    except TimeoutError:
        seconds = settings.database_connect_timeout
        raise DatabaseNotReady(f"the database at {where} is not reachable: no answer within {seconds} s") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseNotReady(f"the database at {where} is not reachable: {exc}") from None
    return {row["version_num"] for row in rows}


def database_address(settings: Settings) -> str:
    """`host:port/database` of DATABASE_URL, for messages: never its password."""
    url = make_url(settings.async_database_url or "")
    host = url.host or url.query.get("host") or "localhost"
    return f"{host}:{url.port or 5432}/{url.database or ''}"
