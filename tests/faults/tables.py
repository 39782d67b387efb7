"""The state of every table of the service, as the fault tests compare it before and after a request."""

from __future__ import annotations

import asyncpg

from tests.database import TABLES

Digest = dict[str, tuple[int, str]]


async def digest(connection: asyncpg.Connection) -> Digest:
    """Every table of the service: its row count and a digest of its rows."""
    return {
        table: tuple(  # type: ignore[misc]
            await connection.fetchrow(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')"  # noqa: S608
                f" FROM {table} AS t"
            )
        )
        for table in TABLES
    }


async def snapshot(database_url: str) -> Digest:
    """`digest` on a connection of its own."""
    connection = await asyncpg.connect(database_url)
    try:
        return await digest(connection)
    finally:
        await connection.close()
