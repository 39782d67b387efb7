"""Database: the declarative base, the engine/session config and the embedded PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg
from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.config.routing import ReplicaConfig, RoutingConfig
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyInitPlugin,
)
from advanced_alchemy.routing import RoutingAsyncSession
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar import Request
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.types import Scope
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from accounts.config import Settings

MIGRATIONS_PATH = Path(__file__).resolve().parents[3] / "migrations"

Base = UUIDv7AuditBase
"""Every table has a UUIDv7 `id`, `created_at` and `updated_at` (UTC)."""

PLUGIN_SESSION = "plugin_session"
"""The plugin's own session dependency, which never commits: handlers take `db_session` (RequestTransactions)."""
PRIMARY = "primary"
"""The routing group of the primary: `statement.execution_options(bind_group=PRIMARY)` keeps a read that a
write depends on off the replicas (writes, and reads after a write in the session, go there anyway)."""
REPLICAS = "replicas"

# advanced-alchemy 1.12's routing session sets `self.bind = None` before AsyncSession.__init__, which SQLAlchemy 2.1
# made a property needing the proxied session: give it back the plain attribute (None: get_bind() routes each query).
RoutingAsyncSession.bind = None


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:  # noqa: ARG001
    """What Alembic's autogenerate compares: only tables this service's models own (SAQ keeps its own)."""
    return not (type_ == "table" and reflected and name not in Base.metadata.tables)


DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
"""What a call on plain asyncpg raises when the database is away, restarting or refuses: the loops that must outlive
an outage (listeners, feed readers) catch these, wait and try again."""


async def create_request_pool(url: str | None, settings: Settings) -> asyncpg.Pool:
    """An asyncpg pool for the API's hot paths (on the primary, or on a replica).

    A connection given back is not reset beyond what asyncpg always does (an open transaction rolled back, its
    listeners dropped): asyncpg's default reset is a round trip on every release, `pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`, for session state that these pools' statements never leave behind. So nothing on
    them may SET (SET LOCAL, inside a transaction, is fine), LISTEN, take a session advisory lock or keep a cursor
    open past its transaction: those go on their own connections (the listeners, the job queue's locks)."""
    return await asyncpg.create_pool(
        url,
        min_size=0,  # connect on first use: the process starts, and is live, while the database is down
        max_size=settings.database_pool_size,
        timeout=settings.database_connect_timeout,
        statement_cache_size=settings.statement_cache_size,
        reset=_leave_session,
    )


async def _leave_session(_connection: asyncpg.Connection) -> None:
    """Nothing more to reset (`create_request_pool`)."""


_ON_PRIMARY = text("SELECT 1").execution_options(bind_group=PRIMARY)


@contextlib.asynccontextmanager
async def driver_connection(session: AsyncSession) -> AsyncIterator[asyncpg.Connection]:
    """The session's own asyncpg connection, on the primary whatever the session did so far (with replicas, a
    session that has only read is routed to one): a statement run on it is in the session's transaction, prepared,
    with no ORM or compilation on the way (`make bench` scenario 11: a third of a create's cost).

    SQLAlchemy does not see what fails on it: a connection lost there is invalidated here, so that the pool
    drops it rather than handing it to the next request."""
    bound = await session.connection(bind_arguments={"clause": _ON_PRIMARY})
    connection = (await bound.get_raw_connection()).driver_connection
    assert connection is not None  # noqa: S101 - a live session's connection always has its driver's
    try:
        yield cast("asyncpg.Connection", connection)
    except BaseException as exc:
        if connection.is_closed():
            await bound.invalidate(exc if isinstance(exc, Exception) else None)
        raise


_AFTER_COMMIT = "accounts.after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` when the session's transaction commits, never when it rolls back or its commit fails: what a
    worker remembers of a write (a revoked token, an ended session) must not outlive a write that was not saved."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, []):
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


class RequestTransactions:
    """The one place a request's transaction ends: it commits when the handler is done with it, before anything of
    the response is sent, so a 2xx is only ever sent for committed work. A commit that fails raises, and the caller
    gets the error (503 or 500, `accounts.core.errors`) instead of the handler's answer; a handler that raises
    leaves its work uncommitted (closing the session rolls it back).

    Handlers take the transaction as `db_session` (`session_dependency`), which ends when the handler returns. One that
    needs the database on some paths only opens it there (`transaction`): the client-credentials grant, which
    never touches the database, is spared a session's making and closing (`make bench` scenario 8: 383 -> 235 us
    of server CPU a grant)."""

    def __init__(self, config: SQLAlchemyAsyncConfig) -> None:
        self.config = config

    @contextlib.asynccontextmanager
    async def __call__(self, state: State, scope: Scope) -> AsyncIterator[AsyncSession]:
        session = self.config.provide_session(state, scope)
        try:
            yield session
            if session.in_transaction() or session.new or session.dirty or session.deleted:
                await session.commit()  # not when the handler never used it: a commit would check out a connection
        finally:
            # The session ends with the block, whatever happened in it: advanced-alchemy's hook that would close it
            # at the response's start is not installed (`SessionsPlugin`). Once the commit has succeeded or
            # raised, an error of closing (a rollback on a connection the database dropped) has nothing to add.
            with contextlib.suppress(Exception):
                await session.close()


class SessionsPlugin(SQLAlchemyInitPlugin):
    """advanced-alchemy's Litestar plugin (the engine, the session maker, the `database` commands) without the
    before-send hook it installs to close a request's session: RequestTransactions closes each session it opens, and
    while any such hook exists Litestar passes every message of every response through it (~2 us of a grant's 110
    in the app, measured by calling it in-process)."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config = super().on_app_init(app_config)
        for config in self.config:
            app_config.before_send.remove(cast("Any", config.before_send_handler))
        return app_config


def session_dependency() -> Provide:
    """`db_session`, the request's session, its transaction (the app state's `transactions`) ending when the
    handler returns."""

    async def db_session(state: State, scope: Scope) -> AsyncIterator[AsyncSession]:
        transactions: RequestTransactions = state.transactions
        async with transactions(state, scope) as session:
            yield session  # Litestar runs the rest after the handler returns, before the response is sent

    return Provide(db_session)


def transaction(request: Request[Any, Any, Any]) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
    """The request's transaction, opened by the handler where it needs one, and ended (committed) as the block
    ends: before the handler returns its answer, as with `db_session`."""
    transactions: RequestTransactions = request.app.state.transactions
    return transactions(request.app.state, request.scope)


ServiceT = TypeVar("ServiceT", bound=SQLAlchemyAsyncRepositoryService[Any])


def service_provider(service: type[ServiceT]) -> Provide:
    """The dependency of an advanced-alchemy service on the request's session (and so in its transaction)."""

    def provide(db_session: NamedDependency[AsyncSession]) -> ServiceT:
        return service(session=db_session)

    return Provide(provide, sync_to_thread=False)


def sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    """The one engine/session configuration, shared by the app, the CLI and the migrations."""
    url = settings.async_database_url
    if url is None:
        msg = "DATABASE_URL is not set; start the embedded database first (accounts.core.db.start_embedded)"
        raise RuntimeError(msg)
    connect_args: dict[str, object] = {"timeout": settings.database_connect_timeout}
    if settings.database_pgbouncer:  # no cache, SQLAlchemy's or asyncpg's: then asyncpg prepares unnamed statements
        connect_args |= {"prepared_statement_cache_size": 0, "statement_cache_size": 0}
    routing = None
    if settings.asyncpg_replica_urls:
        # Sessions read from the replicas in turn; writes, and every read after a write until commit, go to PRIMARY.
        replicas: list[str | ReplicaConfig] = [
            f"postgresql+asyncpg://{replica.removeprefix('postgresql://')}" for replica in settings.asyncpg_replica_urls
        ]
        routing = RoutingConfig(
            engines={PRIMARY: [url], REPLICAS: replicas}, default_group=PRIMARY, read_group=REPLICAS
        )
    return SQLAlchemyAsyncConfig(
        connection_string=None if routing else url,
        routing_config=routing,
        engine_config=EngineConfig(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            pool_pre_ping=False,
            pool_recycle=1800,
            connect_args=connect_args,
        ),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler=None,  # its default, which SessionsPlugin takes out: RequestTransactions closes
        session_dependency_key=PLUGIN_SESSION,
        create_all=False,
        set_default_exception_handler=False,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_PATH),
            version_table_name="alembic_version",
        ),
    )


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL kept in `data_dir/postgres` and return its URL.

    The server stops when the last process that started it exits; the data stays for the next run.
    """
    with warnings.catch_warnings():  # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset; harmless
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server  # noqa: PLC0415 - only embedded mode needs it

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri())
