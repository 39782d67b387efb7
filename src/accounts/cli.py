"""Commands added to the Litestar CLI (`accounts ...`): serving the API, running a worker, creating users."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from litestar.plugins import CLIPluginProtocol

from accounts.config import ConfigError, Settings


def migrate_if_asked(settings: Settings) -> None:
    """Apply pending migrations when MIGRATE_ON_START is on (always, with the embedded database)."""
    if settings.migrate_on_start:
        from advanced_alchemy.alembic.commands import AlembicCommands  # noqa: PLC0415

        from accounts.core.db import sqlalchemy_config  # noqa: PLC0415

        AlembicCommands(sqlalchemy_config(settings)).upgrade()


def share_metrics_between_workers(settings: Settings) -> Path:
    """Give the workers one folder for their metrics snapshots (METRICS_DIR, else a temporary one), emptied
    of a previous run's, so `/metrics` adds up this server's workers and no others; returns the folder."""
    import atexit  # noqa: PLC0415
    import os  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    if settings.metrics_dir is None:
        directory = Path(tempfile.mkdtemp(prefix="accounts-metrics-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ["METRICS_DIR"] = str(directory)  # the workers read their settings from the environment
    else:
        directory = Path(settings.metrics_dir)
        directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.snapshot"):
        stale.unlink(missing_ok=True)
    return directory


def start_on_a_current_database(settings: Settings) -> None:
    """Stop with one line, before any worker starts, if the database does not answer or its schema is behind
    this release; with MIGRATE_ON_START, the pending migrations are applied first."""
    from accounts.system.lifecycle import DatabaseNotReady, check_database, schema_revisions  # noqa: PLC0415

    try:
        if settings.migrate_on_start:
            schema_revisions(settings)  # an unreachable database stops here, not in a traceback from Alembic
            migrate_if_asked(settings)
        check_database(settings)
    except DatabaseNotReady as exc:
        sys.exit(f"accounts: {exc}")  # one line on stderr, status 1: not click's boxed error, which wraps it


@click.command(name="serve", help="Serve the API with granian on uvloop (WEB_CONCURRENCY workers).")
def serve_command() -> None:
    from granian import Granian  # noqa: PLC0415
    from granian.constants import HTTPModes, Interfaces, Loops  # noqa: PLC0415
    from granian.http import HTTP1Settings  # noqa: PLC0415
    from granian.log import LogLevels  # noqa: PLC0415

    from accounts.auth.keys import SigningKeys  # noqa: PLC0415
    from accounts.core.observability.logging import GRANIAN_LOG_CONFIG, configure_logging  # noqa: PLC0415
    from accounts.system.lifecycle import drain_on_sigterm  # noqa: PLC0415

    settings = Settings.from_env()
    try:
        SigningKeys.from_settings(settings)  # a bad key stops here, once, not in every worker
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    configure_logging(settings)
    start_on_a_current_database(settings)
    shared_dir = share_metrics_between_workers(settings)
    server = Granian(
        "accounts.app:serve_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes(settings.http_version),
        loop=Loops.uvloop,
        workers=settings.web_concurrency,
        log_level=LogLevels(settings.log_level.lower()),
        log_access=False,
        log_dictconfig=GRANIAN_LOG_CONFIG,
        workers_kill_timeout=settings.shutdown_timeout,
        http1_settings=HTTP1Settings(header_read_timeout=settings.request_read_timeout * 1000),
        respawn_failed_workers=True,
    )
    drain_on_sigterm(server, shared_dir, settings.shutdown_drain_seconds)
    server.serve()


@click.command(name="worker", help="Run a job worker (SAQ): e-mail, imports and exports, scheduled clean-ups.")
@click.option("--concurrency", type=click.IntRange(1, 200), default=None, help="Jobs at once [WORKER_CONCURRENCY].")
def worker_command(concurrency: int | None) -> None:
    import asyncpg  # noqa: PLC0415
    import msgspec  # noqa: PLC0415
    from psycopg_pool import PoolTimeout  # noqa: PLC0415
    from redis.exceptions import RedisError  # noqa: PLC0415

    from accounts.worker import main  # noqa: PLC0415

    settings = Settings.from_env()
    if concurrency is not None:
        settings = msgspec.structs.replace(settings, worker_concurrency=concurrency)
    start_on_a_current_database(settings)
    try:
        main(settings)
    except (OSError, asyncpg.PostgresError, PoolTimeout, RedisError) as exc:  # cannot reach the database or queue
        raise click.ClickException(f"the worker could not start: {type(exc).__name__}: {exc}") from None


@click.group(name="users", help="Manage users from the command line.")
def users_group() -> None:
    pass


@users_group.command(name="create", help="Create a user with a password; --admin makes it an administrator.")
@click.option("--email", required=True)
@click.option("--username", required=True)
@click.option("--full-name", default=None)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, envvar="ACCOUNTS_PASSWORD")
@click.option("--admin", is_flag=True, help="Give the user admin rights.")
def create_user_command(email: str, username: str, full_name: str | None, password: str, admin: bool) -> None:
    import asyncpg  # noqa: PLC0415
    import msgspec  # noqa: PLC0415

    from accounts.core.db import sqlalchemy_config  # noqa: PLC0415
    from accounts.core.errors import DatabaseFailure, ServiceError, database_failure  # noqa: PLC0415
    from accounts.users.repository import UserRepository  # noqa: PLC0415
    from accounts.users.schemas import UserCreate  # noqa: PLC0415
    from accounts.users.services import UserService  # noqa: PLC0415

    try:
        data = msgspec.convert(
            {"email": email, "username": username, "full_name": full_name, "password": password}, UserCreate
        )
    except msgspec.ValidationError as exc:
        raise click.ClickException(str(exc)) from None

    settings = Settings.from_env()
    migrate_if_asked(settings)

    async def create() -> str:
        database = sqlalchemy_config(settings)
        pool = await asyncpg.create_pool(settings.asyncpg_database_url, min_size=0, max_size=1)
        try:
            async with database.get_session() as session:
                user = await UserService(UserRepository(pool)).create(session, data, admin=admin)
                await session.commit()
                return str(user.id)
        finally:
            await pool.close()
            await database.get_engine().dispose()

    try:
        user_id = asyncio.run(create())
    except ServiceError as exc:  # a password refused by the screening, say: the same words the API gives
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        if database_failure(exc) is DatabaseFailure.CONFLICT:
            raise click.ClickException("a user with this e-mail or username already exists") from None
        raise
    click.echo(f"created {'admin ' if admin else ''}user {username} ({user_id})")


class AccountsCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        cli.add_command(serve_command)
        cli.add_command(worker_command)
        cli.add_command(users_group)
