"""`python -m tests.bench.pools`: what a hot read costs through asyncpg's own pool, and through a connection
borrowed from SQLAlchemy's pool (the one-pool alternative), on the bench database (`make bench` seeds it).

    python -m tests.bench.pools [--reads 20000] [--dsn postgresql://...]

The figure is the reason each API worker keeps two pools (README: Database connections).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import uvloop
from sqlalchemy.ext.asyncio import create_async_engine

from tests.bench.run import BENCH_DATABASE, SERVER_URL

READ = "SELECT id, email, username FROM users WHERE id = $1"
CONCURRENT = 50


async def measure(reads: int, dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"), pool_size=10, max_overflow=0)
    ids = [row[0] for row in await pool.fetch("SELECT id FROM users LIMIT 1000")]

    async def through_asyncpg(n: int) -> object:
        return await pool.fetchrow(READ, ids[n % len(ids)])

    async def through_sqlalchemy(n: int) -> object:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            return await raw.driver_connection.fetchrow(READ, ids[n % len(ids)])  # type: ignore[union-attr]

    reading: dict[str, Callable[[int], Awaitable[object]]] = {
        "asyncpg pool": through_asyncpg,
        "SQLAlchemy pool, raw asyncpg connection": through_sqlalchemy,
    }
    try:
        for _ in range(2):  # the first round warms both up
            for name, read in reading.items():
                started = time.perf_counter()
                for first in range(0, reads, CONCURRENT):
                    await asyncio.gather(*(read(n) for n in range(first, first + CONCURRENT)))
                took = time.perf_counter() - started
                print(f"{name:42} {reads / took:8.0f} reads/s {took / reads * 1e6:7.1f} us a read", flush=True)
    finally:
        await pool.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--dsn", default=SERVER_URL.rsplit("/", 1)[0] + f"/{BENCH_DATABASE}")
    args = parser.parse_args()
    uvloop.run(measure(args.reads, args.dsn))


if __name__ == "__main__":
    main()
