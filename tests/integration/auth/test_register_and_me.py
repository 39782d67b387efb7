"""Signing up, logging in with the password grant, and a user's own account at /api/v1/users/me."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.database import insert_api_key
from tests.integration.auth.support import (
    ME,
    MY_PASSWORD,
    REGISTER,
    TOKEN,
    USERS,
    Account,
    Client,
    LoggedIn,
    MakeUser,
    assert_oauth_error,
    assert_unauthenticated,
    log_in,
    request_token,
    sql,
)
from tests.problems import assert_problem

SIGN_UP = {
    "email": "Ada.Lovelace@Example.com",
    "username": "ada",
    "password": "analytical engine",
    "full_name": "Ada Lovelace",
    "bio": "Notes on the engine.",
}


# --- register -----------------------------------------------------------------------------------


async def test_register_creates_a_plain_user_who_can_log_in(client: Client, database_url: str) -> None:
    response = await client.post(REGISTER, json=SIGN_UP)

    assert response.status_code == 201, response.text
    user = response.json()
    assert response.headers["location"] == f"{USERS}/{user['id']}"
    assert user["email"] == "ada.lovelace@example.com"
    assert user["username"] == "ada"
    assert user["full_name"] == "Ada Lovelace"
    assert user["bio"] == "Notes on the engine."
    assert user["is_active"] is True
    assert user["is_superuser"] is False
    assert "password" not in response.text
    assert SIGN_UP["password"] not in response.text
    (row,) = await sql(database_url, "SELECT hashed_password FROM users")
    assert row["hashed_password"].startswith("$argon2id$")
    assert row["hashed_password"] not in response.text

    tokens = await log_in(
        client, Account(id=user["id"], username="ada", email=user["email"], password="analytical engine")
    )
    me = await client.get(ME, headers=tokens.headers)
    assert me.json() == user


async def test_register_needs_no_credentials_and_ignores_bad_ones(client: Client) -> None:
    response = await client.post(REGISTER, json=SIGN_UP, headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("length", [8, 128])
async def test_register_accepts_passwords_at_the_length_limits(client: Client, length: int) -> None:
    password = ("Tr0ub4d&-Quince-Parapet-9083 " * 5)[:length]  # not a repeated character: screening refuses those
    response = await client.post(REGISTER, json=SIGN_UP | {"password": password})
    assert response.status_code == 201, response.text
    assert (await request_token(client, "ada", password)).status_code == 200


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"password": "p" * 7}, "password"),
        ({"password": "p" * 129}, "password"),
        ({"password": None}, "password"),
        ({"password": 12345678}, "password"),
        ({"email": "not-an-email"}, "email"),
        ({"username": "Ada"}, "username"),
        ({"is_superuser": True}, "is_superuser"),
        ({"is_active": False}, "is_active"),
        ({"hashed_password": "$argon2id$x"}, "hashed_password"),
    ],
)
async def test_register_rejects_a_bad_body(
    client: Client, database_url: str, changes: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post(REGISTER, json=SIGN_UP | changes), 400, field=field)
    assert await sql(database_url, "SELECT 1 FROM users") == []


async def test_register_without_a_password_is_400(client: Client) -> None:
    body = {name: value for name, value in SIGN_UP.items() if name != "password"}
    assert_problem(await client.post(REGISTER, json=body), 400, field="password")


@pytest.mark.parametrize("taken", [{"email": "ADA.lovelace@example.com"}, {"username": "ada"}])
async def test_register_with_a_taken_email_or_username_is_409(client: Client, taken: dict[str, str]) -> None:
    assert (await client.post(REGISTER, json=SIGN_UP)).status_code == 201
    other = {"email": "other@example.com", "username": "other", "password": "another password"}
    assert_problem(await client.post(REGISTER, json=other | taken), 409, field=next(iter(taken)))


async def test_register_takes_json_only(client: Client) -> None:
    assert_problem(await client.post(REGISTER, data=SIGN_UP), 415)


async def test_register_is_403_when_sign_up_is_closed(settings: Settings, database_url: str) -> None:
    closed = msgspec.structs.replace(settings, registration_enabled=False)
    async with AsyncTestClient(create_app(closed)) as app:
        problem = assert_problem(await app.post(REGISTER, json=SIGN_UP), 403)
        assert "closed" in problem["detail"]
        assert (await request_token(app, "ada", SIGN_UP["password"])).status_code == 400
    assert await sql(database_url, "SELECT 1 FROM users") == []


# --- the password grant -------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["username", "email", "email_upper_case"])
async def test_log_in_with_username_or_email(client: Client, account_a: Account, identifier: str) -> None:
    name = {
        "username": account_a.username,
        "email": account_a.email,
        "email_upper_case": account_a.email.upper(),
    }[identifier]
    tokens = await log_in(client, account_a, identifier=name)
    assert (await client.get(ME, headers=tokens.headers)).json()["id"] == account_a.id


async def test_wrong_password_unknown_user_and_deactivated_user_get_the_same_answer(
    client: Client, make_user: MakeUser, database_url: str, account_a: Account
) -> None:
    deactivated = await make_user(active=False)
    await sql(
        database_url,
        "INSERT INTO users (id, email, username, created_at, updated_at) VALUES"
        " (gen_random_uuid(), 'nopass@example.com', 'nopass', now(), now())",
    )
    attempts = {
        "wrong password": (account_a.username, "not the password"),
        "wrong password by e-mail": (account_a.email, "not the password"),
        "unknown user": ("nobody-here", account_a.password),
        "deactivated user": (deactivated.username, deactivated.password),
        "user without a password": ("nopass", account_a.password),
        "username in another case": (account_a.username.upper(), account_a.password),
    }
    answers = {}
    for name, (identifier, password) in attempts.items():
        response = await request_token(client, identifier, password)
        assert_oauth_error(response, 400, "invalid_grant")  # RFC 6749 section 5.2
        answers[name] = response.json()

    assert len({msgspec.json.encode(answer) for answer in answers.values()}) == 1, answers


@pytest.mark.parametrize(
    ("form", "error", "field"),
    [
        ({"username": "user-a", "password": "p"}, "invalid_request", "grant_type"),
        ({"grant_type": "implicit", "username": "user-a", "password": "p"}, "unsupported_grant_type", "grant_type"),
        ({"grant_type": "refresh_token", "username": "user-a", "password": "p"}, "invalid_request", "refresh_token"),
        ({"grant_type": "password", "password": "p"}, "invalid_request", "username"),
        ({"grant_type": "password", "username": "user-a"}, "invalid_request", "password"),
        ({"grant_type": "password", "username": "", "password": "p"}, "invalid_request", "username"),
        ({"grant_type": "password", "username": "user-a", "password": ""}, "invalid_request", "password"),
        ({"grant_type": "password", "username": "user-a", "password": "p" * 129}, "invalid_request", "password"),
    ],
)
async def test_the_token_endpoint_rejects_a_bad_form(
    client: Client, account_a: Account, form: dict[str, str], error: str, field: str
) -> None:
    body = assert_oauth_error(await client.post(TOKEN, data=form), 400, error)
    assert field in [each["field"] for each in body["errors"]], body


async def test_the_token_endpoint_takes_a_form_not_json(client: Client, account_a: Account) -> None:
    body = {"grant_type": "password", "username": account_a.username, "password": account_a.password}
    assert_oauth_error(await client.post(TOKEN, json=body), 415, "invalid_request")


async def test_a_deactivated_user_cannot_log_in_until_reactivated(
    client: Client, account_a: Account, admin: LoggedIn
) -> None:
    url = f"{USERS}/{account_a.id}"
    assert (await client.patch(url, json={"is_active": False}, headers=admin.headers)).status_code == 200
    assert_oauth_error(await request_token(client, account_a.username, account_a.password), 400, "invalid_grant")
    assert (await client.patch(url, json={"is_active": True}, headers=admin.headers)).status_code == 200
    assert (await request_token(client, account_a.username, account_a.password)).status_code == 200


# --- me -----------------------------------------------------------------------------------------


async def test_me_is_the_callers_own_account(client: Client, user_a: LoggedIn, user_b: LoggedIn) -> None:
    mine = await client.get(ME, headers=user_a.headers)
    assert mine.status_code == 200
    assert mine.json()["id"] == user_a.id
    assert mine.json()["username"] == "user-a"
    assert "password" not in mine.text
    assert (await client.get(ME, headers=user_b.headers)).json()["id"] == user_b.id
    assert (await client.get(f"{USERS}/{user_a.id}", headers=user_a.headers)).json() == mine.json()


async def test_patch_me_changes_only_the_profile_fields_sent(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    response = await client.patch(
        ME, json={"full_name": "Ada A.", "bio": "Hello", "email": "New-A@Example.com"}, headers=user_a.headers
    )

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["full_name"] == "Ada A."
    assert updated["bio"] == "Hello"
    assert updated["email"] == "new-a@example.com"
    assert updated["username"] == "user-a"
    assert (await client.get(ME, headers=user_a.headers)).json() == updated
    cleared = (await client.patch(ME, json={"bio": None}, headers=user_a.headers)).json()
    assert cleared["bio"] is None
    assert cleared["full_name"] == "Ada A."
    (row,) = await sql(database_url, "SELECT is_active, is_superuser FROM users WHERE id = $1", user_a.id)
    assert tuple(row) == (True, False)


@pytest.mark.parametrize(
    "body",
    [
        {"is_superuser": True},
        {"is_active": False},
        {"full_name": "Sneaky", "is_superuser": True},
        {"password": "a brand new password"},
        {"hashed_password": "$argon2id$x"},
        {"token_version": 5},
        {"id": "01964f8e-0000-7000-8000-000000000000"},
    ],
)
async def test_patch_me_rejects_other_fields_and_changes_nothing(
    client: Client, user_a: LoggedIn, database_url: str, body: dict[str, Any]
) -> None:
    columns = "full_name, is_active, is_superuser, hashed_password, token_version"
    before = await sql(database_url, f"SELECT {columns} FROM users WHERE id = $1", user_a.id)  # noqa: S608

    unknown = next(name for name in body if name not in {"email", "username", "full_name", "bio"})
    assert_problem(await client.patch(ME, json=body, headers=user_a.headers), 400, field=unknown)

    assert await sql(database_url, f"SELECT {columns} FROM users WHERE id = $1", user_a.id) == before  # noqa: S608
    assert (await client.get(ME, headers=user_a.headers)).status_code == 200


async def test_patch_me_to_a_taken_email_is_409(client: Client, user_a: LoggedIn, account_b: Account) -> None:
    assert_problem(await client.patch(ME, json={"email": account_b.email}, headers=user_a.headers), 409, field="email")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", ME, None),
        ("PATCH", ME, {"full_name": "Service"}),
        ("POST", MY_PASSWORD, {"current_password": "whatever1", "new_password": "whatever2"}),
    ],
)
async def test_me_is_403_for_an_api_key(
    client: Client, database_url: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    key = await insert_api_key(database_url, ["users:read", "users:write"])
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        assert_problem(await client.request(method, path, json=body, headers=headers), 403)


@pytest.mark.parametrize(("method", "body"), [("GET", None), ("PATCH", {"full_name": "Nobody"})])
async def test_me_is_401_without_credentials(client: Client, method: str, body: dict[str, Any] | None) -> None:
    assert_unauthenticated(await client.request(method, ME, json=body), error=None)
