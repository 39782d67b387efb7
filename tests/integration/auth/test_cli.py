"""`python -m accounts users create`: the way to make the first admin, run as an operator would."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.auth.support import (
    API_KEYS,
    USERS,
    Client,
    assert_oauth_error,
    bearer,
    request_token,
    sql,
    unverified_parts,
)
from tests.problems import assert_problem

ROOT = Path(__file__).resolve().parents[3]
CLI_PASSWORD = "operator chose this one"


async def run_cli(
    database_url: str, data_dir: Path, *args: str, password: str | None = CLI_PASSWORD
) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in {"ACCOUNTS_PASSWORD", "DATABASE_URL"}}
    env |= {"DATABASE_URL": database_url, "DATA_DIR": str(data_dir), "LOG_FORMAT": "json"}
    if password is not None:
        env["ACCOUNTS_PASSWORD"] = password
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "accounts", "users", "create", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_create_an_admin_who_can_log_in_and_administer(client: Client, database_url: str, tmp_path: Path) -> None:
    result = await run_cli(database_url, tmp_path, "--email", "Root@Example.com", "--username", "root", "--admin")

    assert result.returncode == 0, result.stderr
    match = re.search(r"created admin user root \(([0-9a-f-]{36})\)", result.stdout)
    assert match, result.stdout
    assert CLI_PASSWORD not in result.stdout + result.stderr

    (row,) = await sql(database_url, "SELECT id, email, is_superuser, is_active, hashed_password FROM users")
    assert str(row["id"]) == match.group(1)
    assert row["email"] == "root@example.com"
    assert row["is_superuser"] is True
    assert row["is_active"] is True
    assert row["hashed_password"].startswith("$argon2id$")
    assert row["hashed_password"] not in result.stdout + result.stderr

    response = await request_token(client, "root@example.com", CLI_PASSWORD)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert unverified_parts(token)[1]["roles"] == ["admin"]
    assert (await client.get(USERS, headers=bearer(token))).status_code == 200
    created = await client.post(API_KEYS, json={"name": "first", "scopes": ["users:read"]}, headers=bearer(token))
    assert created.status_code == 201, created.text


async def test_without_admin_the_user_is_a_plain_user(client: Client, database_url: str, tmp_path: Path) -> None:
    result = await run_cli(database_url, tmp_path, "--email", "plain@example.com", "--username", "plain")

    assert result.returncode == 0, result.stderr
    assert "created user plain (" in result.stdout
    response = await request_token(client, "plain", CLI_PASSWORD)
    assert response.status_code == 200, response.text
    assert_problem(await client.get(USERS, headers=bearer(response.json()["access_token"])), 403)
    assert_oauth_error(await request_token(client, "plain", "not the password"), 400, "invalid_grant")


async def test_a_taken_email_or_username_fails_and_changes_nothing(
    client: Client, database_url: str, tmp_path: Path
) -> None:
    first = await run_cli(database_url, tmp_path, "--email", "dup@example.com", "--username", "dup")
    assert first.returncode == 0, first.stderr

    again = await run_cli(
        database_url, tmp_path, "--email", "DUP@example.com", "--username", "other", "--admin", password="long enough"
    )

    assert again.returncode != 0
    assert "already exists" in again.stderr
    rows = await sql(database_url, "SELECT username, is_superuser FROM users")
    assert [tuple(row) for row in rows] == [("dup", False)]
    assert (await request_token(client, "dup", CLI_PASSWORD)).status_code == 200


BAD_INPUTS = {
    "bad e-mail": (("--email", "not-an-email", "--username", "bad"), CLI_PASSWORD),
    "short password": (("--email", "short@example.com", "--username", "short"), "seven77"),
    "common password": (("--email", "common@example.com", "--username", "common"), "password1"),
    "no password and no terminal": (("--email", "nopass@example.com", "--username", "nopass"), None),
}


async def test_bad_input_fails_and_creates_nobody(database_url: str, tmp_path: Path) -> None:
    results = await asyncio.gather(
        *(
            run_cli(database_url, tmp_path, *args, "--admin", password=password)
            for args, password in BAD_INPUTS.values()
        )
    )

    for case, result in zip(BAD_INPUTS, results, strict=True):
        assert result.returncode != 0, (case, result.stdout)
        assert "Traceback" not in result.stderr, (case, result.stderr)
        assert result.stderr.strip(), case
    assert await sql(database_url, "SELECT 1 FROM users") == []
