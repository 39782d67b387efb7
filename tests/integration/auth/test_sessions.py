"""Sessions: one per login, listed for their user (and admins), ended one at a time; an ended session's refresh
token and access tokens stop working at once, in this worker and in every worker of a running server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from uuid_utils.compat import uuid7

from tests.integration.auth.support import (
    ME,
    REFRESH,
    TOKEN,
    Account,
    Client,
    LoggedIn,
    assert_unauthenticated,
    bearer,
    eventually,
    sql,
    unverified_parts,
)
from tests.problems import assert_problem

SESSIONS = f"{ME}/sessions"
PHONE = "Accounts-Phone/1.0"
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"


async def log_in_from(client: Client, account: Account, user_agent: str) -> LoggedIn:
    form = {"grant_type": "password", "username": account.username, "password": account.password}
    response = await client.post(TOKEN, data=form, headers={"User-Agent": user_agent})
    assert response.status_code == 200, response.text
    pair = response.json()
    return LoggedIn(account=account, access_token=pair["access_token"], refresh_token=pair["refresh_token"])


def sid(login: LoggedIn) -> str:
    return str(unverified_parts(login.access_token)[1]["sid"])


async def test_a_user_lists_their_sessions_and_ends_one(client: Client, account_a: Account) -> None:
    phone = await log_in_from(client, account_a, PHONE)
    laptop = await log_in_from(client, account_a, LAPTOP)

    listed = await client.get(SESSIONS, headers=phone.headers)
    assert listed.status_code == 200, listed.text
    assert listed.headers["cache-control"] == "no-store"
    items = {item["id"]: item for item in listed.json()["items"]}
    assert set(items) == {sid(phone), sid(laptop)}
    assert items[sid(phone)]["current"] is True
    assert items[sid(laptop)]["current"] is False
    assert items[sid(laptop)]["user_agent"] == LAPTOP
    assert items[sid(laptop)]["amr"] == ["pwd"]
    assert items[sid(laptop)]["address"]

    ended = await client.delete(f"{SESSIONS}/{sid(laptop)}", headers=phone.headers)
    assert ended.status_code == 204, ended.text
    assert_unauthenticated(await client.get(ME, headers=laptop.headers))  # at once, no expiry awaited
    assert_unauthenticated(await client.post(REFRESH, json={"refresh_token": laptop.refresh_token}))
    assert (await client.get(ME, headers=phone.headers)).status_code == 200
    assert [item["id"] for item in (await client.get(SESSIONS, headers=phone.headers)).json()["items"]] == [sid(phone)]
    assert_problem(await client.delete(f"{SESSIONS}/{sid(laptop)}", headers=phone.headers), 404)

    # A refresh keeps the session: same id, and its last use moves on.
    refreshed = await client.post(REFRESH, json={"refresh_token": phone.refresh_token})
    assert unverified_parts(refreshed.json()["access_token"])[1]["sid"] == sid(phone)


async def test_ending_my_own_session_or_logging_out_revokes_its_access_token(
    client: Client, account_a: Account
) -> None:
    mine = await log_in_from(client, account_a, PHONE)
    assert (await client.delete(f"{SESSIONS}/{sid(mine)}", headers=mine.headers)).status_code == 204
    assert_unauthenticated(await client.get(ME, headers=mine.headers))

    other = await log_in_from(client, account_a, PHONE)
    assert (await client.post("/api/v1/auth/logout", json={"refresh_token": other.refresh_token})).status_code == 204
    assert_unauthenticated(await client.get(ME, headers=other.headers))


async def test_sessions_are_private_to_their_user_and_open_to_admins(
    client: Client, user_a: LoggedIn, user_b: LoggedIn, admin: LoggedIn
) -> None:
    assert_problem(await client.delete(f"{SESSIONS}/{sid(user_b)}", headers=user_a.headers), 404)
    assert_problem(await client.get(f"/api/v1/users/{user_b.id}/sessions", headers=user_a.headers), 403)
    listed = await client.get(f"/api/v1/users/{user_b.id}/sessions", headers=admin.headers)
    assert [item["id"] for item in listed.json()["items"]] == [sid(user_b)]
    assert_problem(await client.delete(f"/api/v1/users/{user_a.id}/sessions/{sid(user_b)}", headers=admin.headers), 404)
    assert (
        await client.delete(f"/api/v1/users/{user_b.id}/sessions/{sid(user_b)}", headers=admin.headers)
    ).status_code == 204
    assert_unauthenticated(await client.get(ME, headers=user_b.headers))
    assert (await client.get(ME, headers=user_a.headers)).status_code == 200


@pytest.mark.parametrize("session_id", ["not-a-uuid", "1" * 40, "%00"])
async def test_a_malformed_session_id_is_a_400(client: Client, user_a: LoggedIn, session_id: str) -> None:
    assert_problem(await client.delete(f"{SESSIONS}/{session_id}", headers=user_a.headers), 400)


async def test_an_unknown_session_is_a_404(client: Client, user_a: LoggedIn) -> None:
    assert_problem(await client.delete(f"{SESSIONS}/{uuid7()}", headers=user_a.headers), 404)


async def test_a_login_from_a_new_device_is_told_to_the_user(
    client: Client, account_a: Account, database_url: str
) -> None:
    async def notices() -> int:
        rows = await sql(
            database_url,
            "SELECT count(*) AS n FROM outbox_messages WHERE kind = 'security_notice' AND recipient = $1",
            account_a.email,
        )
        return int(rows[0]["n"])

    await log_in_from(client, account_a, PHONE)
    assert await notices() == 0  # the first login ever: nothing to compare with
    await log_in_from(client, account_a, PHONE)
    assert await notices() == 0
    await log_in_from(client, account_a, LAPTOP)
    assert await notices() == 1
    (row,) = await sql(
        database_url,
        "SELECT subject, body FROM outbox_messages WHERE kind = 'security_notice' AND recipient = $1",
        account_a.email,
    )
    assert row["subject"] == "New login to your account"
    assert LAPTOP in row["body"]


async def test_an_ended_session_is_refused_by_every_worker_of_a_running_server(
    client: Client, account_a: Account, live_url: str
) -> None:
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=live_url, timeout=10, limits=fresh_connections) as live:
        form = {"grant_type": "password", "username": account_a.username, "password": account_a.password}
        login = (await live.post(TOKEN, data=form)).json()
        headers = bearer(login["access_token"])

        async def statuses() -> list[int]:
            return [r.status_code for r in await asyncio.gather(*(live.get(ME, headers=headers) for _ in range(8)))]

        assert await statuses() == [200] * 8
        session_id = unverified_parts(login["access_token"])[1]["sid"]
        assert (await client.delete(f"{SESSIONS}/{session_id}", headers=headers)).status_code == 204

        async def refused_everywhere() -> bool:
            return await statuses() == [401] * 8

        await eventually(refused_everywhere, within=5)
