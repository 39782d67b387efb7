"""The Alembic migrations build the schema from nothing, tear it down, and match the models."""

from __future__ import annotations

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from accounts.config import Settings
from accounts.core.db import Base, include_object
from tests.database import CreateDatabase, migrate


async def tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_upgrade_downgrade_upgrade_on_an_empty_database(create_database: CreateDatabase) -> None:
    url = await create_database()
    assert await tables(url) == set()

    await migrate(url)
    assert {"users", "alembic_version"} <= await tables(url)

    await migrate(url, "base", down=True)
    assert await tables(url) == {"alembic_version"}

    await migrate(url)
    assert {"users", "alembic_version"} <= await tables(url)


async def test_migrations_match_the_models(database_url: str) -> None:
    """A model change without its migration shows up here as a diff."""
    engine = create_async_engine(Settings(database_url=database_url).async_database_url or "")

    def diff(connection: Connection) -> list[object]:
        # The same filter as migrations/env.py: the job queue's own saq_* tables are not ours to compare.
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": include_object})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()
