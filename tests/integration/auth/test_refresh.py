"""Refresh-token rotation and reuse detection, logging out, logging out everywhere, and changing a password."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.database import insert_api_key
from tests.integration.auth.support import (
    LOGOUT,
    LOGOUT_ALL,
    ME,
    MY_PASSWORD,
    REFRESH,
    USERS,
    Account,
    Client,
    LoggedIn,
    assert_oauth_error,
    assert_unauthenticated,
    bearer,
    log_in,
    request_token,
    sql,
    unverified_parts,
)
from tests.problems import assert_problem

NEW_PASSWORD = "a new and longer passphrase"


async def refresh(client: Client, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def rotate(client: Client, token: str) -> dict[str, Any]:
    response = await refresh(client, token)
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def works(client: Client, access_token: str) -> bool:
    response = await client.get(ME, headers=bearer(access_token))
    if response.status_code == 401:
        assert_unauthenticated(response)
        return False
    assert response.status_code == 200, response.text
    return True


# --- rotation -----------------------------------------------------------------------------------


async def test_refresh_gives_a_new_pair_and_spends_the_old_token(client: Client, user_a: LoggedIn) -> None:
    response = await refresh(client, user_a.refresh_token)

    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    pair = response.json()
    assert pair["token_type"] == "Bearer"
    assert pair["refresh_token"] != user_a.refresh_token
    assert pair["access_token"] != user_a.access_token
    assert unverified_parts(pair["access_token"])[1]["sub"] == user_a.id
    assert await works(client, pair["access_token"])
    assert await works(client, user_a.access_token)  # an access token lives until it expires
    assert (await refresh(client, pair["refresh_token"])).status_code == 200


async def test_an_admins_refreshed_token_is_still_an_admins(client: Client, admin: LoggedIn) -> None:
    pair = await rotate(client, admin.refresh_token)
    assert unverified_parts(pair["access_token"])[1]["roles"] == ["admin"]
    assert (await client.get(USERS, headers=bearer(pair["access_token"]))).status_code == 200


async def test_a_reused_refresh_token_revokes_its_whole_family(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    second = await rotate(client, user_a.refresh_token)
    third = await rotate(client, second["refresh_token"])

    reuse = await refresh(client, user_a.refresh_token)

    problem = assert_unauthenticated(reuse)
    assert "already used" in problem["detail"]
    # The newest token of the chain, never used, is revoked with it: the thief and the owner both lose it.
    assert_unauthenticated(await refresh(client, third["refresh_token"]))
    assert_unauthenticated(await refresh(client, second["refresh_token"]))
    rows = await sql(database_url, "SELECT revoked_at FROM refresh_tokens")
    assert len(rows) == 3
    assert all(row["revoked_at"] is not None for row in rows)


async def test_reuse_revokes_only_that_family(client: Client, account_a: Account) -> None:
    phone, laptop = await log_in(client, account_a), await log_in(client, account_a)
    await rotate(client, phone.refresh_token)

    assert_unauthenticated(await refresh(client, phone.refresh_token))

    assert (await refresh(client, laptop.refresh_token)).status_code == 200


async def test_concurrent_refreshes_with_one_token_give_one_pair(
    client: Client, user_a: LoggedIn, live_url: str
) -> None:
    """Ten refreshes racing with one token on a two-worker server: one wins, the rest are reuse, and the
    reuse revokes the winner's new token too."""
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as live:
        responses = await asyncio.gather(
            *(live.post(REFRESH, json={"refresh_token": user_a.refresh_token}) for _ in range(10))
        )

    assert sorted(r.status_code for r in responses) == [200] + [401] * 9
    (winner,) = [r.json() for r in responses if r.status_code == 200]
    assert_unauthenticated(await refresh(client, winner["refresh_token"]))


@pytest.mark.parametrize("token", ["never-issued", "x" * 256, "acck_000000000000_" + "A" * 43])
async def test_an_unknown_refresh_token_is_401(client: Client, token: str) -> None:
    problem = assert_unauthenticated(await refresh(client, token))
    assert "invalid, expired or revoked" in problem["detail"]


async def test_an_expired_refresh_token_is_401(client: Client, user_a: LoggedIn, database_url: str) -> None:
    await sql(database_url, "UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    assert_unauthenticated(await refresh(client, user_a.refresh_token))


async def test_an_access_token_is_not_a_refresh_token(client: Client, user_a: LoggedIn) -> None:
    assert_unauthenticated(await refresh(client, user_a.access_token[:256]))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "refresh_token"),
        ({"refresh_token": ""}, "refresh_token"),
        ({"refresh_token": "x" * 257}, "refresh_token"),
        ({"refresh_token": 42}, "refresh_token"),
        ({"refresh_token": "abc", "extra": 1}, "extra"),
    ],
)
async def test_refresh_rejects_a_bad_body(client: Client, body: dict[str, Any], field: str) -> None:
    assert_problem(await client.post(REFRESH, json=body), 400, field=field)


async def test_refresh_takes_json_only(client: Client, user_a: LoggedIn) -> None:
    response = await client.post(REFRESH, data={"refresh_token": user_a.refresh_token})
    assert_problem(response, 415)
    assert (await refresh(client, user_a.refresh_token)).status_code == 200


# --- logout -------------------------------------------------------------------------------------


async def test_logout_revokes_that_refresh_token_only(client: Client, account_a: Account) -> None:
    phone, laptop = await log_in(client, account_a), await log_in(client, account_a)

    response = await client.post(LOGOUT, json={"refresh_token": phone.refresh_token})

    assert response.status_code == 204
    assert response.content == b""
    problem = assert_unauthenticated(await refresh(client, phone.refresh_token))
    assert "already used" not in problem["detail"]
    assert (await refresh(client, laptop.refresh_token)).status_code == 200


async def test_logout_of_an_unknown_or_revoked_token_is_still_204(client: Client, user_a: LoggedIn) -> None:
    assert (await client.post(LOGOUT, json={"refresh_token": "never-issued"})).status_code == 204
    assert (await client.post(LOGOUT, json={"refresh_token": user_a.refresh_token})).status_code == 204
    assert (await client.post(LOGOUT, json={"refresh_token": user_a.refresh_token})).status_code == 204


async def test_logout_rejects_a_bad_body(client: Client) -> None:
    assert_problem(await client.post(LOGOUT, json={"token": "x"}), 400)
    assert_problem(await client.post(LOGOUT, data={"refresh_token": "x"}), 415)


# --- logout everywhere --------------------------------------------------------------------------


async def test_logout_all_revokes_every_token_of_the_user_at_once(
    client: Client, account_a: Account, user_b: LoggedIn
) -> None:
    phone, laptop = await log_in(client, account_a), await log_in(client, account_a)
    rotated = await rotate(client, laptop.refresh_token)
    assert await works(client, phone.access_token)
    assert await works(client, rotated["access_token"])

    response = await client.post(LOGOUT_ALL, headers=phone.headers)

    assert response.status_code == 204
    for access in (phone.access_token, laptop.access_token, rotated["access_token"]):
        assert not await works(client, access)
    for token in (phone.refresh_token, rotated["refresh_token"]):
        assert_unauthenticated(await refresh(client, token))
    # Another user is untouched, and the user can log in again with working tokens.
    assert await works(client, user_b.access_token)
    assert (await refresh(client, user_b.refresh_token)).status_code == 200
    again = await log_in(client, account_a)
    assert await works(client, again.access_token)
    assert unverified_parts(again.access_token)[1]["ver"] == unverified_parts(phone.access_token)[1]["ver"] + 1
    assert (await refresh(client, again.refresh_token)).status_code == 200


async def test_logout_all_needs_a_user(client: Client, database_url: str) -> None:
    assert_unauthenticated(await client.post(LOGOUT_ALL), error=None)
    key = await insert_api_key(database_url, ["users:read", "users:write"])
    assert_problem(await client.post(LOGOUT_ALL, headers={"X-API-Key": key}), 403)


async def test_logout_all_with_a_revoked_token_is_401(client: Client, user_a: LoggedIn) -> None:
    assert (await client.post(LOGOUT_ALL, headers=user_a.headers)).status_code == 204
    assert_unauthenticated(await client.post(LOGOUT_ALL, headers=user_a.headers))


# --- password change ----------------------------------------------------------------------------


async def change_password(client: Client, user: LoggedIn, current: str, new: str) -> httpx.Response:
    return await client.post(MY_PASSWORD, json={"current_password": current, "new_password": new}, headers=user.headers)


async def test_a_password_change_logs_out_everywhere_and_the_new_password_logs_in(
    client: Client, account_a: Account
) -> None:
    phone, laptop = await log_in(client, account_a), await log_in(client, account_a)

    response = await change_password(client, phone, account_a.password, NEW_PASSWORD)

    assert response.status_code == 204, response.text
    for session in (phone, laptop):
        assert not await works(client, session.access_token)
        assert_unauthenticated(await refresh(client, session.refresh_token))
    assert_oauth_error(await request_token(client, account_a.username, account_a.password), 400, "invalid_grant")
    response = await request_token(client, account_a.username, NEW_PASSWORD)
    assert response.status_code == 200, response.text
    assert await works(client, response.json()["access_token"])


async def test_a_wrong_current_password_is_401_and_changes_nothing(client: Client, user_a: LoggedIn) -> None:
    response = await change_password(client, user_a, "not the password", NEW_PASSWORD)

    problem = assert_unauthenticated(response, error="invalid_grant")
    assert "current password" in problem["detail"]
    assert await works(client, user_a.access_token)
    assert (await refresh(client, user_a.refresh_token)).status_code == 200
    assert_oauth_error(await request_token(client, user_a.account.username, NEW_PASSWORD), 400, "invalid_grant")
    assert (await request_token(client, user_a.account.username, user_a.account.password)).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"current_password": "x" * 10, "new_password": "short"}, "new_password"),
        ({"current_password": "x" * 10, "new_password": "n" * 129}, "new_password"),
        ({"current_password": "", "new_password": NEW_PASSWORD}, "current_password"),
        ({"new_password": NEW_PASSWORD}, "current_password"),
        ({"current_password": "x" * 10}, "new_password"),
        ({"current_password": "x" * 10, "new_password": NEW_PASSWORD, "is_superuser": True}, "is_superuser"),
    ],
)
async def test_a_password_change_rejects_a_bad_body(
    client: Client, user_a: LoggedIn, body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post(MY_PASSWORD, json=body, headers=user_a.headers), 400, field=field)
    assert await works(client, user_a.access_token)


async def test_a_password_change_needs_a_user(client: Client, database_url: str) -> None:
    body = {"current_password": "whatever1", "new_password": NEW_PASSWORD}
    assert_unauthenticated(await client.post(MY_PASSWORD, json=body), error=None)
    key = await insert_api_key(database_url, ["users:read", "users:write"])
    assert_problem(await client.post(MY_PASSWORD, json=body, headers={"X-API-Key": key}), 403)


# --- a deactivated user -------------------------------------------------------------------------


async def test_a_deactivated_users_refresh_token_is_401(client: Client, user_a: LoggedIn, admin: LoggedIn) -> None:
    response = await client.patch(f"{USERS}/{user_a.id}", json={"is_active": False}, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert_unauthenticated(await refresh(client, user_a.refresh_token))
