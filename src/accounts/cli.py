"""Commands added to the Litestar CLI (`accounts ...`): serving the API with granian."""

from __future__ import annotations

import click
from litestar.plugins import CLIPluginProtocol

from accounts.config import Settings


@click.command(name="serve", help="Serve the API with granian on uvloop (WEB_CONCURRENCY workers).")
def serve_command() -> None:
    from advanced_alchemy.alembic.commands import AlembicCommands  # noqa: PLC0415
    from granian import Granian  # noqa: PLC0415
    from granian.constants import Interfaces, Loops  # noqa: PLC0415
    from granian.log import LogLevels  # noqa: PLC0415

    from accounts.db import sqlalchemy_config  # noqa: PLC0415
    from accounts.logging import GRANIAN_LOG_CONFIG, configure_logging  # noqa: PLC0415

    settings = Settings.from_env()
    configure_logging(settings)
    if settings.migrate_on_start:
        AlembicCommands(sqlalchemy_config(settings)).upgrade()
    Granian(
        "accounts.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=settings.web_concurrency,
        log_level=LogLevels(settings.log_level.lower()),
        log_access=False,
        log_dictconfig=GRANIAN_LOG_CONFIG,
        workers_kill_timeout=settings.shutdown_timeout,
        respawn_failed_workers=True,
    ).serve()


class AccountsCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        cli.add_command(serve_command)
