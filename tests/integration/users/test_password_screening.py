"""Screening new passwords through the API: sign-up, an admin's create, a password change, a reset and an import each
refuse a password that is common or built on the user's own details, naming the field and why, before anything is
hashed or written (and a refused change is no failed login)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from uuid import UUID

import pytest

from accounts.core.passwords import hash_password, verify_password
from tests.integration.auth.support import (
    AUTH,
    MY_PASSWORD,
    PASSWORD,
    REGISTER,
    Account,
    Client,
    insert_user,
    log_in,
    request_token,
    sql,
)
from tests.integration.users.bulk import USERS, ndjson, run_import, users_table
from tests.problems import assert_problem

RESET = f"{AUTH}/password-reset"
CONFIRM = f"{AUTH}/password-reset/confirm"
TOKEN_IN_BODY = re.compile(r"\?token=([A-Za-z0-9_-]+)")


async def written(database_url: str) -> dict[str, int]:
    """How many rows the tables a sign-up writes hold."""
    tables = ("users", "email_tokens", "outbox_messages", "login_failures")
    return {table: (await sql(database_url, f"SELECT count(*) FROM {table}"))[0][0] for table in tables}  # noqa: S608


async def account(database_url: str, username: str) -> Account:
    """A user named `username` (e-mail `<username>@example.com`) whose password is PASSWORD."""
    return await insert_user(database_url, await hash_password(PASSWORD), username)


async def stored_hash(database_url: str, user_id: str) -> str:
    (row,) = await sql(database_url, "SELECT hashed_password FROM users WHERE id = $1", UUID(user_id))
    return str(row["hashed_password"])


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("password1", "is one of the most common passwords"),
        ("qwertyuiop", "is one of the most common passwords"),
        ("ada.lovelace1", "contains your username"),
        ("lovelace1815", "contains your username"),
    ],
)
async def test_sign_up_with_a_weak_password_is_a_400_naming_the_password_and_writes_nothing(
    client: Client, database_url: str, password: str, message: str
) -> None:
    body = {"email": "ada@example.com", "username": "ada.lovelace", "password": password}

    problem = assert_problem(await client.post(REGISTER, json=body), 400, field="password")

    assert problem["type"] == "/problems/validation-failed"
    assert problem["errors"] == [{"field": "password", "message": message}]
    assert problem["detail"] == f"The password {message}: choose one that is harder to guess."
    assert await written(database_url) == {"users": 0, "email_tokens": 0, "outbox_messages": 0, "login_failures": 0}
    accepted = await client.post(REGISTER, json=body | {"password": "correct horse battery staple"})
    assert accepted.status_code == 201, accepted.text


async def test_an_admin_create_with_a_name_derived_password_is_refused(
    client: Client, database_url: str, service_key: str
) -> None:
    body = {"email": "grace@example.com", "username": "amazing", "full_name": "Grace Hopper", "password": "Hopper1906"}
    headers = {"X-API-Key": service_key}

    problem = assert_problem(await client.post(USERS, json=body, headers=headers), 400, field="password")

    assert problem["errors"] == [{"field": "password", "message": "contains your name"}]
    assert await users_table(database_url) == []
    without_password = {key: value for key, value in body.items() if key != "password"}
    assert (await client.post(USERS, json=without_password, headers=headers)).status_code == 201


@pytest.mark.parametrize("current", [PASSWORD, "not the current one"])
async def test_a_password_change_to_a_username_derived_one_is_refused_before_the_current_password_counts(
    client: Client, database_url: str, current: str
) -> None:
    ada = await account(database_url, "ada.lovelace")
    logged_in = await log_in(client, ada)
    failures_before = await sql(database_url, "SELECT key, failures, pending FROM login_failures ORDER BY key")
    hash_before = await stored_hash(database_url, ada.id)
    body = {"current_password": current, "new_password": "Ada.Lovelace!"}

    problem = assert_problem(await client.post(MY_PASSWORD, json=body, headers=logged_in.headers), 400)

    assert problem["errors"] == [{"field": "new_password", "message": "contains your username"}]
    assert problem["detail"] == "The new password contains your username: choose one that is harder to guess."
    assert await sql(database_url, "SELECT key, failures, pending FROM login_failures ORDER BY key") == failures_before
    assert await stored_hash(database_url, ada.id) == hash_before
    assert (await client.get(f"{USERS}/me", headers=logged_in.headers)).status_code == 200  # no token revoked
    assert (await request_token(client, ada.username, PASSWORD)).status_code == 200  # the old password works


async def test_a_reset_to_a_common_password_is_refused_and_the_token_stays_unused(
    client: Client, database_url: str
) -> None:
    ada = await account(database_url, "ada")
    assert (await client.post(RESET, json={"email": ada.email})).status_code == 202
    (outbox_row,) = await sql(database_url, "SELECT body FROM outbox_messages WHERE kind = 'password_reset'")
    token_match = TOKEN_IN_BODY.search(outbox_row["body"])
    assert token_match, outbox_row["body"]
    token = token_match.group(1)
    hash_before = await stored_hash(database_url, ada.id)

    problem = assert_problem(await client.post(CONFIRM, json={"token": token, "new_password": "iloveyou"}), 400)

    assert problem["errors"] == [{"field": "new_password", "message": "is one of the most common passwords"}]
    assert await sql(database_url, "SELECT used_at FROM email_tokens WHERE purpose = 'reset'") == [(None,)]
    assert await stored_hash(database_url, ada.id) == hash_before
    assert (await request_token(client, ada.username, PASSWORD)).status_code == 200

    new_password = "Quince-Parapet-9083"
    assert (await client.post(CONFIRM, json={"token": token, "new_password": new_password})).status_code == 204
    assert await verify_password(await stored_hash(database_url, ada.id), new_password)


async def test_a_reset_with_an_unknown_token_is_about_the_token_whatever_the_password(client: Client) -> None:
    body = {"token": "x" * 43, "new_password": "password1"}
    assert_problem(await client.post(CONFIRM, json=body), 400, field="token")


@pytest.fixture
def bulk_service(bulk_client: Client, service_key: str) -> Iterator[Client]:
    bulk_client.headers["X-API-Key"] = service_key
    yield bulk_client
    del bulk_client.headers["X-API-Key"]


async def test_an_import_reports_the_rows_with_weak_passwords_and_imports_the_others(
    bulk_service: Client, database_url: str
) -> None:
    existing = await bulk_service.post(USERS, json={"email": "kept@example.com", "username": "kept"})
    assert existing.status_code == 201, existing.text
    rows = ndjson(
        {"email": "one@example.com", "username": "one", "password": "correct horse battery staple"},  # 1
        {"email": "two@example.com", "username": "two", "password": "password1"},  # 2
        {"email": "grace@example.com", "username": "grace.hopper", "password": "grace.hopper1"},  # 3
        {"email": "four@example.com", "username": "four"},  # 4
        {"email": "kept@example.com", "username": "kept", "password": "password1"},  # 5: exists, its password unused
    )

    job, report = await run_import(bulk_service, rows)

    assert report == [
        {"line": 2, "error": "the password is one of the most common passwords"},
        {"line": 3, "error": "the password contains your username"},
    ]
    assert job["progress"] == {"processed": 5, "total": 5, "failed": 2}
    users = {user["email"]: user for user in await users_table(database_url)}
    assert sorted(users) == ["four@example.com", "kept@example.com", "one@example.com"]
    assert await verify_password(users["one@example.com"]["hashed_password"], "correct horse battery staple")
    assert users["kept@example.com"]["hashed_password"] is None


async def test_a_refused_password_change_leaves_the_session_usable(client: Client, database_url: str) -> None:
    """The refusal ends the request's transaction like any 400: the same user changes to a good password next."""
    ada = await account(database_url, "ada.lovelace")
    logged_in = await log_in(client, ada)
    weak = {"current_password": PASSWORD, "new_password": "password1"}
    assert_problem(await client.post(MY_PASSWORD, json=weak, headers=logged_in.headers), 400, field="new_password")

    good = {"current_password": PASSWORD, "new_password": "Quince-Parapet-9083"}
    assert (await client.post(MY_PASSWORD, json=good, headers=logged_in.headers)).status_code == 204
    assert (await request_token(client, ada.username, "Quince-Parapet-9083")).status_code == 200
