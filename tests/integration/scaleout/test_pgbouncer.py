"""Behind PgBouncer in transaction pooling mode (DATABASE_PGBOUNCER): a real pgbouncer with a few server
connections in front of the session database, so the statements of many client connections interleave on
each server connection, and `accounts serve` on it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from accounts.worker import make_queue
from tests.database import insert_api_key
from tests.integration.scaleout.support import StartPgBouncer, fetchval, sign_up
from tests.server import serving

USERS = 12
ROUNDS = 3
IMPORTED = 5_001  # one row more than an import batch: two transactions, each with its staging table
FINAL = {"complete", "failed", "aborted"}


async def journey(client: httpx.AsyncClient, key: dict[str, str]) -> None:
    """One user's sign-up, login, reads and updates, and a service's reads of them."""
    signed_up = await sign_up(client)
    user_id, me = signed_up.user["id"], signed_up.headers
    for round_ in range(ROUNDS):
        read = await client.get("/api/v1/users/me", headers=me)
        assert read.status_code == 200, read.text
        changed = await client.patch(
            "/api/v1/users/me", headers={**me, "If-Match": read.headers["etag"]}, json={"bio": f"round {round_}"}
        )
        assert changed.status_code == 200, changed.text
        assert (await client.get(f"/api/v1/users/{user_id}", headers=key)).json()["bio"] == f"round {round_}"
        page = await client.get("/api/v1/users", params={"q": signed_up.user["username"]}, headers=key)
        assert page.status_code == 200, page.text
        assert [user["id"] for user in page.json()["items"]] == [user_id]
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": signed_up.refresh_token})
    assert refreshed.status_code == 200, refreshed.text


async def imported(client: httpx.AsyncClient, key: dict[str, str]) -> dict[str, Any]:
    """An import of IMPORTED new users, run by a job worker on the pooled connections; returns the finished job."""
    rows = b"".join(
        msgspec.json.encode({"email": f"imported{n}@example.com", "username": f"imported{n}"}) + b"\n"
        for n in range(IMPORTED)
    )
    headers = {**key, "Content-Type": "application/x-ndjson"}
    accepted = await client.post("/api/v1/users/imports", content=rows, headers=headers)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = (await client.get(f"/api/v1/jobs/{accepted.json()['id']}", headers=key)).json()
        if job["status"] in FINAL:
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)


async def test_the_api_and_its_jobs_work_behind_pgbouncer(
    database_url: str, pgbouncer: StartPgBouncer, tmp_path: Path
) -> None:
    key = {"X-API-Key": await insert_api_key(database_url, ["users:read", "users:write"])}
    # SAQ makes its tables on a queue's first connect; two workers racing to do it on a fresh database can
    # see them missing (the loser of its advisory lock goes on at once), so they are made beforehand.
    queue = make_queue(Settings(database_url=database_url))
    await queue.connect()
    await queue.disconnect()
    async with pgbouncer(pool_size=3) as pooled_url:
        env = {
            "DATABASE_URL": pooled_url,
            "DATABASE_PGBOUNCER": "true",
            "DATABASE_DIRECT_URL": database_url,
            "WEB_CONCURRENCY": "2",
            "WORKER_IN_PROCESS": "true",
            "DATA_DIR": str(tmp_path / "data"),
        }
        with serving(env, tmp_path / "serve.log") as served:  # which checks the log has no traceback
            async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
                await asyncio.gather(*(journey(client, key) for _ in range(USERS)))
                job = await imported(client, key)

    assert job["status"] == "complete", job
    assert await fetchval(database_url, "SELECT count(*) FROM users WHERE email LIKE 'imported%'") == IMPORTED


@pytest.mark.parametrize("behind_pgbouncer", [True, False])
async def test_a_client_connection_moves_between_server_connections(
    settings: Settings, pgbouncer: StartPgBouncer, behind_pgbouncer: bool
) -> None:
    """Consecutive transactions of one pooled connection run on alternate server connections: a statement
    prepared and cached in one is missing in the next, unless DATABASE_PGBOUNCER keeps none."""
    async with pgbouncer(pool_size=2) as pooled_url:
        pooled = msgspec.structs.replace(
            settings,
            database_url=pooled_url,
            database_pgbouncer=behind_pgbouncer,
            database_direct_url=settings.database_url,
        )
        async with AsyncTestClient(create_app(pooled), raise_server_exceptions=False) as client:
            statuses = [(await client.get("/health/ready")).status_code for _ in range(4)]

    assert statuses == ([200] * 4 if behind_pgbouncer else [200, 503, 200, 503])


async def test_credential_changes_reach_the_cache_past_pgbouncer(
    settings: Settings, database_url: str, pgbouncer: StartPgBouncer
) -> None:
    """The credential cache LISTENs on DATABASE_DIRECT_URL: through PgBouncer the notification of a change
    made elsewhere would never arrive, and a deactivated user would stay logged in on this worker."""
    async with pgbouncer(pool_size=2) as pooled_url:
        pooled = msgspec.structs.replace(
            settings, database_url=pooled_url, database_pgbouncer=True, database_direct_url=database_url
        )
        async with AsyncTestClient(create_app(pooled), raise_server_exceptions=False) as client:
            signed_up = await sign_up(client)
            me = signed_up.headers
            assert (await client.get("/api/v1/users/me", headers=me)).status_code == 200  # the user's state is cached

            await fetchval(database_url, "UPDATE users SET is_active = false WHERE id = $1", signed_up.user["id"])
            deadline = time.monotonic() + 5
            while (status := (await client.get("/api/v1/users/me", headers=me)).status_code) == 200:
                assert time.monotonic() < deadline, "the deactivation never reached the cache"
                await asyncio.sleep(0.05)

    assert status == 401
