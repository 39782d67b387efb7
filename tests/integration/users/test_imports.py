"""POST /api/v1/users/imports: uploads, the import job on both queue backends, and its error report."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from accounts.config import Settings
from accounts.core.passwords import verify_password
from accounts.jobs.services import Jobs
from accounts.users.bulk import BINARY
from tests.database import insert_api_key
from tests.integration.auth.support import sql
from tests.integration.jobs.support import started_jobs
from tests.integration.users.bulk import (
    CSV,
    IMPORT_MAX_BYTES,
    IMPORTS,
    NDJSON,
    USERS,
    Client,
    ndjson,
    run_import,
    start_import,
    uploads,
    users_table,
    wait_for,
)
from tests.problems import assert_problem

CONTROL_CHARACTER_PATTERN = "^(?:[^\\\\x00-\\\\x1f\\\\x7f]*)(?!\\\\n)$"


@pytest.fixture(autouse=True)
def as_service(bulk_client: Client, service_key: str) -> Iterator[None]:
    bulk_client.headers["X-API-Key"] = service_key
    yield
    del bulk_client.headers["X-API-Key"]


async def create_user(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post(USERS, json=fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


MIXED = ndjson(
    {"email": "Ada@Example.com", "username": "ada", "full_name": "Ada Lovelace"},  # 1
    {"email": "bob@example.com", "username": "bob", "bio": "Line one\nline two"},  # 2
    "",  # 3: blank, not a row
    '{"email": ',  # 4
    "[1, 2]",  # 5
    {"email": "c@example.com", "username": 5},  # 6
    {"email": "d@example.com", "username": "dee", "is_superuser": True},  # 7
    {"email": "e@example.com", "username": "e" * 33},  # 8
    {"email": "f@example.com", "username": "eff", "full_name": "F\u0001"},  # 9
    {"email": "ADA@example.com", "username": "ada2"},  # 10
    {"email": "bob2@example.com", "username": "bob"},  # 11
    {"email": "TAKEN@example.com", "username": "someone"},  # 12: exists, skipped
    {"email": "g@example.com", "username": "carol"},  # 13: carol is taken
    {"username": "nomail"},  # 14
    {"email": "h@example.com", "username": "haspw", "password": "correct horse"},  # 15
    b'{"email": "i@example.com", "username": "\xff"}',  # 16: not UTF-8
)
MIXED_ERRORS = [
    {"line": 4, "error": "not valid JSON: Input data was truncated"},
    {"line": 5, "error": "Expected `object`, got `array`"},
    {"line": 6, "error": "Expected `str`, got `int` - at `$.username`"},
    {"line": 7, "error": "Object contains unknown field `is_superuser`"},
    {"line": 8, "error": "Expected `str` of length <= 32 - at `$.username`"},
    {"line": 9, "error": f"Expected `str` matching regex '{CONTROL_CHARACTER_PATTERN}' - at `$.full_name`"},
    {"line": 10, "error": "the e-mail address appears more than once in the file (first on line 1)"},
    {"line": 11, "error": "the username appears more than once in the file (first on line 2)"},
    {"line": 13, "error": "the username is already taken"},
    {"line": 14, "error": "Object missing required field `email`"},
    {"line": 16, "error": "the line is not valid UTF-8"},
]


async def test_good_bad_and_duplicate_rows_give_exact_counts_and_report(
    bulk_client: Client, bulk_settings: Settings, database_url: str
) -> None:
    await create_user(bulk_client, email="taken@example.com", username="carol")

    job, report = await run_import(bulk_client, MIXED)

    assert job["kind"] == "import_users"
    assert job["progress"] == {"processed": 15, "total": 15, "failed": 11}
    assert report == MIXED_ERRORS
    users = {user["email"]: user for user in await users_table(database_url)}
    assert sorted(users) == ["ada@example.com", "bob@example.com", "h@example.com", "taken@example.com"]
    assert users["ada@example.com"]["full_name"] == "Ada Lovelace"
    assert users["bob@example.com"]["bio"] == "Line one\nline two"
    assert users["taken@example.com"]["username"] == "carol"  # skipped, untouched
    assert users["ada@example.com"]["hashed_password"] is None
    assert await verify_password(users["h@example.com"]["hashed_password"], "correct horse")
    assert uploads(bulk_settings) == []  # the upload is gone once imported


@pytest.mark.parametrize("on_duplicate", ["skip", "update"])
async def test_running_the_same_file_again_changes_nothing(
    bulk_client: Client, database_url: str, on_duplicate: str
) -> None:
    await create_user(bulk_client, email="taken@example.com", username="carol")
    await run_import(bulk_client, MIXED, on_duplicate=on_duplicate)
    before = await users_table(database_url)

    job, report = await run_import(bulk_client, MIXED, on_duplicate=on_duplicate)

    # With update, line 12 renames carol to someone, which frees `carol` for line 13 in the same run.
    expected = MIXED_ERRORS if on_duplicate == "skip" else [e for e in MIXED_ERRORS if e["line"] != 13]
    assert job["progress"] == {"processed": 15, "total": 15, "failed": len(expected)}
    assert report == expected
    assert await users_table(database_url) == before  # same rows, versions, timestamps and password hash


async def test_skip_leaves_existing_users_and_update_changes_their_profile(
    bulk_client: Client, database_url: str
) -> None:
    ada = await create_user(bulk_client, email="ada@example.com", username="ada", full_name="Ada", bio="Old")
    await create_user(bulk_client, email="bob@example.com", username="bob", full_name="Bob")
    rows = ndjson(
        {"email": "ADA@example.com", "username": "countess", "full_name": "Ada King", "password": "new password"},
        {"email": "bob@example.com", "username": "bob", "full_name": "Bob"},  # the same as stored
        {"email": "new@example.com", "username": "new"},
    )

    _, report = await run_import(bulk_client, rows, on_duplicate="skip")
    assert report == []
    users = {user["email"]: user for user in await users_table(database_url)}
    assert (users["ada@example.com"]["username"], users["ada@example.com"]["version"]) == ("ada", 1)
    assert "new@example.com" in users

    _, report = await run_import(bulk_client, rows, on_duplicate="update")
    assert report == []
    after = {user["email"]: user for user in await users_table(database_url)}
    changed = after["ada@example.com"]
    assert (changed["username"], changed["full_name"], changed["bio"]) == ("countess", "Ada King", None)
    assert changed["version"] == 2
    assert changed["hashed_password"] is None  # an import never changes an existing user's password
    assert str(changed["id"]) == ada["id"]
    assert after["bob@example.com"] == users["bob@example.com"]  # unchanged rows are not written at all
    assert after["new@example.com"] == users["new@example.com"]


async def test_update_reports_a_username_held_by_another_user(bulk_client: Client, database_url: str) -> None:
    await create_user(bulk_client, email="ada@example.com", username="ada")
    await create_user(bulk_client, email="bob@example.com", username="bob")

    _, report = await run_import(
        bulk_client, ndjson({"email": "ada@example.com", "username": "bob"}), on_duplicate="update"
    )

    assert report == [{"line": 1, "error": "the username is already taken"}]
    assert [user["username"] for user in await users_table(database_url)] == ["ada", "bob"]


async def test_csv_rows_with_empty_cells_quotes_and_bad_lines(bulk_client: Client, database_url: str) -> None:
    body = (
        "\ufeffemail,username,full_name,bio\r\n"  # a BOM and CRLF, as spreadsheets write them
        "ada@example.com,ada,Ada Lovelace,\r\n"  # 2
        'bob@example.com,bob,,"Line one\nline two"\r\n'  # 3-4: a quoted cell over two lines
        "carol@example.com,carol\r\n"  # 5: too few cells
        ",dee,Dee,\r\n"  # 6: no e-mail
        "\r\n"  # 7: blank
        "eve@example.com,EVE,,\r\n"  # 8: upper case is not a username
        "ADA@EXAMPLE.COM,ada2,,\r\n"  # 9: in-file duplicate
    ).encode() + b"fay@example.com,fay,\xff,\r\n"  # 10: not UTF-8

    job, report = await run_import(bulk_client, body, media_type=CSV)

    assert report == [
        {"line": 5, "error": "expected 4 cells (as in the header row), found 2"},
        {"line": 6, "error": "Object missing required field `email`"},
        {"line": 8, "error": "Expected `str` matching regex '^(?:[a-z0-9_.-]+)(?!\\\\n)$' - at `$.username`"},
        {"line": 9, "error": "the e-mail address appears more than once in the file (first on line 2)"},
        {"line": 10, "error": "the line is not valid UTF-8"},
    ]
    assert job["progress"] == {"processed": 7, "total": 7, "failed": 5}
    users = {user["email"]: user for user in await users_table(database_url)}
    assert sorted(users) == ["ada@example.com", "bob@example.com"]
    assert (users["ada@example.com"]["full_name"], users["ada@example.com"]["bio"]) == ("Ada Lovelace", None)
    assert (users["bob@example.com"]["full_name"], users["bob@example.com"]["bio"]) == (None, "Line one\nline two")


async def test_too_long_lines_are_row_errors(bulk_client: Client) -> None:
    body = ndjson(
        {"email": "ada@example.com", "username": "ada", "bio": "x" * 70_000},
        {"email": "b@example.com", "username": "bob"},
    )
    job, report = await run_import(bulk_client, body)
    assert report == [{"line": 1, "error": "the line is longer than 65536 bytes"}]
    assert job["progress"] == {"processed": 2, "total": 2, "failed": 1}


async def test_a_file_over_several_batches(bulk_client: Client, database_url: str) -> None:
    rows = [{"email": f"user{n}@example.com", "username": f"user{n}"} for n in range(12_000)]
    rows[7_000]["username"] = "Bad"
    job, report = await run_import(bulk_client, ndjson(*rows))
    assert job["progress"] == {"processed": 12_000, "total": 12_000, "failed": 1}
    assert [error["line"] for error in report] == [7_001]
    (count,) = await sql(database_url, "SELECT count(*) FROM users")
    assert count[0] == 11_999
    (total,) = await sql(database_url, "SELECT sum(users) FROM user_counts")
    assert total[0] == 11_999  # the trigger-kept counts saw every batch


async def test_an_empty_file_completes_with_nothing(bulk_client: Client) -> None:
    job, report = await run_import(bulk_client, b"")
    assert job["progress"] == {"processed": 0, "total": 0, "failed": 0}
    assert report == []


# --- what the upload refuses ----------------------------------------------------------------------


async def test_a_file_over_the_limit_is_413_and_nothing_is_kept(
    bulk_client: Client, bulk_settings: Settings, bulk_jobs: Jobs
) -> None:
    line = b'{"email": "ada@example.com", "username": "ada"}\n'
    body = line * (IMPORT_MAX_BYTES // len(line) + 1)
    before = await started_jobs(bulk_jobs)

    response = await bulk_client.post(IMPORTS, content=body, headers={"Content-Type": NDJSON})

    assert_problem(response, 413)
    assert uploads(bulk_settings) == []
    assert await started_jobs(bulk_jobs) == before, "no job was started"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
async def test_other_media_types_are_415(bulk_client: Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await bulk_client.post(IMPORTS, content=b'{"email": "a@example.com"}\n', headers=headers)
    assert_problem(response, 415)


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("email,username,role", "Unknown CSV column(s) 'role'"),
        ("email,full_name", "needs the column(s) username"),
        ("email,username,email", "appears twice"),
    ],
)
async def test_a_csv_header_that_names_no_user_is_400(
    bulk_client: Client, bulk_settings: Settings, bulk_jobs: Jobs, header: str, detail: str
) -> None:
    before = await started_jobs(bulk_jobs)
    response = await bulk_client.post(
        IMPORTS, content=f"{header}\nada@example.com,ada,x\n".encode(), headers={"Content-Type": CSV}
    )
    assert detail in assert_problem(response, 400)["detail"]
    assert uploads(bulk_settings) == []
    assert await started_jobs(bulk_jobs) == before


async def test_an_unknown_on_duplicate_is_400(bulk_client: Client) -> None:
    response = await bulk_client.post(
        IMPORTS, content=b"", headers={"Content-Type": NDJSON}, params={"on_duplicate": "replace"}
    )
    assert_problem(response, 400, field="on_duplicate")


# --- who may import -----------------------------------------------------------------------------


async def test_a_read_only_key_may_not_import(bulk_client: Client, database_url: str) -> None:
    reader = await insert_api_key(database_url, ["users:read"])
    response = await bulk_client.post(
        IMPORTS,
        content=ndjson({"email": "a@example.com", "username": "ada"}),
        headers={"Content-Type": NDJSON, "X-API-Key": reader},
    )
    assert_problem(response, 403)
    assert await sql(database_url, "SELECT id FROM users") == []


async def test_only_the_owner_or_an_admin_reads_the_job(bulk_client: Client, database_url: str) -> None:
    job_id = await start_import(bulk_client, ndjson({"email": "a@example.com", "username": "ada"}))
    await wait_for(bulk_client, job_id)
    other = await insert_api_key(database_url, ["users:read", "users:write"])

    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/result"):
        assert_problem(await bulk_client.get(path, headers={"X-API-Key": other}), 403)
        assert (await bulk_client.get(path)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        ndjson({"email": "ada@example.com", "username": "ada"}),
        b"\xef\xbb\xbfemail,username\r\nada@example.com,ada\r\n",
    ],
    ids=["ndjson", "csv"],
)
async def test_a_file_sent_as_binary_is_read_in_its_format(bulk_client: Client, database_url: str, body: bytes) -> None:
    """What generated clients send: `application/octet-stream`; NDJSON starts with `{`, CSV with its header."""
    job, report = await run_import(bulk_client, body, media_type=BINARY)

    assert (job["progress"], report) == ({"processed": 1, "total": 1, "failed": 0}, [])
    assert [user["username"] for user in await users_table(database_url)] == ["ada"]


async def test_the_upload_is_documented_as_a_binary_file_with_both_examples(bulk_client: Client) -> None:
    document = (await bulk_client.get("/schema/openapi.json")).json()
    operation = document["paths"][IMPORTS]["post"]
    assert operation["operationId"] == "importUsers"
    content = operation["requestBody"]["content"]
    assert set(content) == {BINARY}
    assert content[BINARY]["schema"] == {"type": "string", "format": "binary"}
    assert content[BINARY]["examples"]["csv"]["value"].startswith("email,username")
    assert content[BINARY]["examples"]["ndjson"]["value"].startswith('{"email"')
    assert all(media_type in operation["requestBody"]["description"] for media_type in (BINARY, NDJSON, CSV))
    assert {"400", "401", "403", "413", "415"} <= set(operation["responses"])
    assert operation["responses"]["202"]["headers"]["Location"]
