"""Alembic environment, run by advanced-alchemy's CLI (`accounts database ...`) with the app's engine."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from alembic import context
from sqlalchemy.ext.asyncio import AsyncEngine

import accounts.auth.models
import accounts.core.http.idempotency
import accounts.core.limits
import accounts.events.models
import accounts.mail.models
import accounts.mfa.models
import accounts.passkeys.models
import accounts.users.models  # noqa: F401
from accounts.core.db import Base, include_object

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)


def configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=config.version_table_name,
        compare_type=True,
        user_module_prefix="sa.",
        include_object=include_object,
        transaction_per_migration=True,
        **kwargs,
    )


def run_offline() -> None:
    configure(url=config.db_url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_sync(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = cast("AsyncEngine", config.engine)
    async with engine.connect() as connection:
        await connection.run_sync(run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_online())
