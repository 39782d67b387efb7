"""POST /api/v1/users/exports: the export job on both queue backends, its filters, and the round trip."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from accounts.config import Settings
from accounts.core.passwords import hash_password
from accounts.jobs.services import Jobs
from tests.database import insert_api_key
from tests.integration.auth.support import PASSWORD, bearer, insert_user, log_in, sql
from tests.integration.jobs.support import started_jobs
from tests.integration.users.bulk import (
    CSV,
    EXPORTS,
    FINAL,
    NDJSON,
    USERS,
    Client,
    run_export,
    run_import,
    users_table,
)
from tests.problems import assert_problem


@pytest.fixture(autouse=True)
def as_service(bulk_client: Client, service_key: str) -> Iterator[None]:
    bulk_client.headers["X-API-Key"] = service_key
    yield
    del bulk_client.headers["X-API-Key"]


async def create_user(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post(USERS, json=fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
async def three_users(bulk_client: Client) -> list[dict[str, Any]]:
    users = [
        await create_user(bulk_client, email="ada@example.com", username="ada", full_name="Ada, Countess", bio="a\nb"),
        await create_user(bulk_client, email="bob@example.com", username="bob"),
        await create_user(bulk_client, email="carl@example.com", username="carl", full_name='Carl "C"'),
    ]
    response = await bulk_client.patch(f"{USERS}/{users[2]['id']}", json={"is_active": False})
    assert response.status_code == 200, response.text
    return users


def exported(user: dict[str, Any]) -> dict[str, Any]:
    return {name: user[name] for name in ("email", "username", "full_name", "bio")}


def lines(content: bytes) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in content.splitlines()]


async def test_an_ndjson_export_has_every_user_oldest_first(
    bulk_client: Client, three_users: list[dict[str, Any]]
) -> None:
    job, content = await run_export(bulk_client)

    assert job["kind"] == "export_users"
    assert job["progress"] == {"processed": 3, "total": 3, "failed": 0}
    assert lines(content) == [exported(user) for user in three_users]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"is_active": "false"}, ["carl"]),
        ({"is_active": "true"}, ["ada", "bob"]),
        ({"email": "BOB@example.com"}, ["bob"]),
        ({"q": "ca"}, ["carl"]),
        ({"q": "ada", "is_active": "false"}, []),
    ],
)
async def test_filters_select_as_the_list_endpoint_does(
    bulk_client: Client, three_users: list[dict[str, Any]], params: dict[str, str], expected: list[str]
) -> None:
    listed = (await bulk_client.get(USERS, params={**params, "sort": "created_at"})).json()["items"]
    job, content = await run_export(bulk_client, **params)
    assert [row["username"] for row in lines(content)] == expected == [user["username"] for user in listed]
    assert job["progress"]["processed"] == len(expected)


async def test_a_csv_export_has_a_header_and_empty_cells_for_nulls(
    bulk_client: Client, three_users: list[dict[str, Any]]
) -> None:
    job, content = await run_export(bulk_client, format="csv")
    assert job["result_url"]
    assert list(csv.reader(io.StringIO(content.decode(), newline=""))) == [
        ["email", "username", "full_name", "bio"],
        ["ada@example.com", "ada", "Ada, Countess", "a\nb"],
        ["bob@example.com", "bob", "", ""],
        ["carl@example.com", "carl", 'Carl "C"', ""],
    ]
    result = await bulk_client.get(job["result_url"])
    assert result.headers["content-type"].startswith(CSV)


@pytest.mark.parametrize("file_format", ["ndjson", "csv"])
async def test_an_export_round_trips_through_import(
    bulk_client: Client, database_url: str, three_users: list[dict[str, Any]], file_format: str
) -> None:
    _, content = await run_export(bulk_client, format=file_format)
    before = await users_table(database_url)

    for on_duplicate in ("skip", "update"):
        job, report = await run_import(
            bulk_client, content, media_type=NDJSON if file_format == "ndjson" else CSV, on_duplicate=on_duplicate
        )
        assert report == []
        assert job["progress"] == {"processed": 3, "total": 3, "failed": 0}
        assert await users_table(database_url) == before

    await sql(database_url, "DELETE FROM users")
    await run_import(bulk_client, content, media_type=NDJSON if file_format == "ndjson" else CSV)
    _, again = await run_export(bulk_client, format=file_format)
    assert again == content  # the same users again, in the same order


async def insert_users(database_url: str, count: int) -> None:
    """`count` users written with SQL, with created_at times that often tie (the keyset's id breaks ties)."""
    await sql(
        database_url,
        "INSERT INTO users (id, email, username, created_at, updated_at)"
        " SELECT gen_random_uuid(), 'user' || n || '@example.com', 'user' || n,"
        " now() - make_interval(secs => n % 100), now() FROM generate_series(1, $1::int) AS n",
        count,
    )


async def test_an_export_pages_through_many_users_in_keyset_order(bulk_client: Client, database_url: str) -> None:
    await insert_users(database_url, 12_000)
    expected = [
        record["email"] for record in await sql(database_url, "SELECT email FROM users ORDER BY created_at, id")
    ]

    job, content = await run_export(bulk_client)

    assert [row["email"] for row in lines(content)] == expected
    assert job["progress"] == {"processed": 12_000, "total": 12_000, "failed": 0}


async def test_an_export_file_is_only_ever_seen_whole(
    bulk_client: Client, bulk_settings: Settings, database_url: str
) -> None:
    await insert_users(database_url, 12_000)
    response = await bulk_client.post(EXPORTS)
    assert response.status_code == 202, response.text
    job_url = response.headers["location"]
    path = bulk_settings.data_path / "jobs" / f"{response.json()['id']}.ndjson"

    rows_seen: set[int] = set()
    deadline = time.monotonic() + 60
    while (job := (await bulk_client.get(job_url)).json())["status"] not in FINAL:
        if path.exists():
            rows_seen.add(len(path.read_bytes().splitlines()))
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0)

    assert job["status"] == "complete", job
    assert rows_seen <= {12_000}, "a reader saw part of the file"
    assert len(path.read_bytes().splitlines()) == 12_000
    assert list(path.parent.glob(f".{path.name}*")) == [], "no temporary file is left behind"


# --- who may export -----------------------------------------------------------------------------


async def test_a_plain_user_may_not_export(bulk_client: Client, bulk_jobs: Jobs, database_url: str) -> None:
    account = await insert_user(database_url, await hash_password(PASSWORD), "plain")
    user = await log_in(bulk_client, account)
    before = await started_jobs(bulk_jobs)
    del bulk_client.headers["X-API-Key"]
    try:
        assert_problem(await bulk_client.post(EXPORTS, headers=user.headers), 403)
    finally:
        bulk_client.headers["X-API-Key"] = "unused"  # restored by the fixture's teardown
    assert await started_jobs(bulk_jobs) == before, "no job was started"


async def test_a_read_key_exports_and_only_it_or_an_admin_reads_the_result(
    bulk_client: Client, database_url: str, three_users: list[dict[str, Any]]
) -> None:
    reader = await insert_api_key(database_url, ["users:read"])
    bulk_client.headers["X-API-Key"] = reader
    job, _ = await run_export(bulk_client)
    bulk_client.headers["X-API-Key"] = await insert_api_key(database_url, ["users:read", "users:write"])
    assert_problem(await bulk_client.get(job["result_url"]), 403)

    admin = await log_in(
        bulk_client, await insert_user(database_url, await hash_password(PASSWORD), "root", admin=True)
    )
    del bulk_client.headers["X-API-Key"]
    try:
        response = await bulk_client.get(job["result_url"], headers=bearer(admin.access_token))
        assert response.status_code == 200
        assert len(lines(response.content)) == 3
    finally:
        bulk_client.headers["X-API-Key"] = "unused"


async def test_an_unknown_format_is_400(bulk_client: Client) -> None:
    assert_problem(await bulk_client.post(EXPORTS, params={"format": "xlsx"}), 400, field="format")
