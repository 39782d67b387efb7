"""Fill a bench database with users through COPY (one round trip per batch, not one insert per row)."""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
from uuid_utils.compat import uuid7

BATCH = 50_000
COLUMNS = (
    "id",
    "email",
    "username",
    "full_name",
    "bio",
    "is_active",
    "is_superuser",
    "token_version",
    "created_at",
    "updated_at",
)


async def seed_users(dsn: str, count: int) -> list[str]:
    """Insert `count` users spread over the last year; returns their ids (as text) for the load scripts."""
    rng = random.Random(7)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)
    step = dt.timedelta(days=365) / max(count, 1)
    ids: list[str] = []
    connection = await asyncpg.connect(dsn)
    try:
        for first in range(0, count, BATCH):
            rows = []
            for n in range(first, min(first + BATCH, count)):
                user_id = uuid7()
                ids.append(str(user_id))
                created = start + step * n
                rows.append(
                    (
                        user_id,
                        f"user{n}@bench.example",
                        f"user{n}",
                        f"Bench User {n}",
                        None,
                        rng.random() > 0.05,
                        False,
                        0,
                        created,
                        created,
                    )
                )
            await connection.copy_records_to_table("users", records=rows, columns=COLUMNS)
        await connection.execute("VACUUM (ANALYZE) users")  # hint bits and statistics before anyone measures
    finally:
        await connection.close()
    return ids
