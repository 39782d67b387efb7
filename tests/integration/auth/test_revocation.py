"""Deactivating, demoting or deleting a user locks their tokens out at once: the credential cache each
worker keeps is evicted by the service itself and, for changes made elsewhere (another worker, another
process, plain SQL), by PostgreSQL NOTIFY from the triggers of migration 0002."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.auth.support import (
    ME,
    TOKEN,
    USERS,
    Account,
    Client,
    LoggedIn,
    assert_unauthenticated,
    bearer,
    eventually,
    sql,
)
from tests.problems import assert_problem

NOTIFY_WITHIN = 2.0


async def status_of(client: Client, path: str, user: LoggedIn) -> int:
    return (await client.get(path, headers=user.headers)).status_code


async def test_deactivation_by_an_admin_locks_the_user_out_at_once(
    client: Client, user_a: LoggedIn, admin: LoggedIn
) -> None:
    assert await status_of(client, ME, user_a) == 200

    response = await client.patch(f"{USERS}/{user_a.id}", json={"is_active": False}, headers=admin.headers)

    assert response.status_code == 200, response.text
    problem = assert_unauthenticated(await client.get(ME, headers=user_a.headers))
    assert "revoked" in problem["detail"]
    assert await status_of(client, ME, admin) == 200


async def test_a_service_key_deactivating_a_user_locks_them_out_at_once(
    client: Client, user_a: LoggedIn, service_key: str
) -> None:
    assert await status_of(client, ME, user_a) == 200
    response = await client.patch(f"{USERS}/{user_a.id}", json={"is_active": False}, headers={"X-API-Key": service_key})
    assert response.status_code == 200, response.text
    assert_unauthenticated(await client.get(ME, headers=user_a.headers))


async def test_deleting_a_user_locks_them_out_at_once(client: Client, user_a: LoggedIn, service_key: str) -> None:
    assert await status_of(client, ME, user_a) == 200
    assert (await client.delete(f"{USERS}/{user_a.id}", headers={"X-API-Key": service_key})).status_code == 204
    assert_unauthenticated(await client.get(ME, headers=user_a.headers))


# --- changes made straight in the database ------------------------------------------------------


async def test_deactivation_in_the_database_takes_effect_within_two_seconds(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    assert await status_of(client, ME, user_a) == 200  # the worker has the user's state cached now

    await sql(database_url, "UPDATE users SET is_active = false WHERE id = $1", user_a.id)

    async def locked_out() -> bool:
        return await status_of(client, ME, user_a) == 401

    await eventually(locked_out, within=NOTIFY_WITHIN)
    assert_unauthenticated(await client.get(ME, headers=user_a.headers))


async def test_reactivation_in_the_database_takes_effect_within_two_seconds(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    await sql(database_url, "UPDATE users SET is_active = false WHERE id = $1", user_a.id)

    async def locked_out() -> bool:
        return await status_of(client, ME, user_a) == 401

    await eventually(locked_out, within=NOTIFY_WITHIN)
    await sql(database_url, "UPDATE users SET is_active = true WHERE id = $1", user_a.id)

    async def back() -> bool:
        return await status_of(client, ME, user_a) == 200

    await eventually(back, within=NOTIFY_WITHIN)


async def test_a_token_version_bump_in_the_database_revokes_tokens_within_two_seconds(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    assert await status_of(client, ME, user_a) == 200

    await sql(database_url, "UPDATE users SET token_version = token_version + 1 WHERE id = $1", user_a.id)

    async def revoked() -> bool:
        return await status_of(client, ME, user_a) == 401

    await eventually(revoked, within=NOTIFY_WITHIN)


async def test_a_demotion_in_the_database_takes_admin_rights_within_two_seconds(
    client: Client, admin: LoggedIn, database_url: str
) -> None:
    assert await status_of(client, USERS, admin) == 200

    await sql(database_url, "UPDATE users SET is_superuser = false WHERE id = $1", admin.id)

    async def demoted() -> bool:
        return await status_of(client, USERS, admin) == 403

    await eventually(demoted, within=NOTIFY_WITHIN)
    assert_problem(await client.get(USERS, headers=admin.headers), 403)
    assert await status_of(client, ME, admin) == 200


async def test_a_promotion_in_the_database_gives_admin_rights_within_two_seconds(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    assert await status_of(client, USERS, user_a) == 403

    await sql(database_url, "UPDATE users SET is_superuser = true WHERE id = $1", user_a.id)

    async def promoted() -> bool:
        return await status_of(client, USERS, user_a) == 200

    await eventually(promoted, within=NOTIFY_WITHIN)


async def test_a_deletion_in_the_database_takes_effect_within_two_seconds(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    assert await status_of(client, ME, user_a) == 200

    await sql(database_url, "DELETE FROM users WHERE id = $1", user_a.id)

    async def gone() -> bool:
        return await status_of(client, ME, user_a) == 401

    await eventually(gone, within=NOTIFY_WITHIN)


async def test_a_profile_change_in_the_database_leaves_tokens_alone(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    assert await status_of(client, ME, user_a) == 200
    await sql(database_url, "UPDATE users SET full_name = 'Renamed' WHERE id = $1", user_a.id)
    await asyncio.sleep(0.3)
    response = await client.get(ME, headers=user_a.headers)
    assert response.status_code == 200
    assert response.json()["full_name"] == "Renamed"


# --- another process ----------------------------------------------------------------------------


async def test_a_deactivation_reaches_every_worker_of_a_running_server(
    client: Client, account_a: Account, admin: LoggedIn, live_url: str
) -> None:
    """`accounts serve` with two workers: a deactivation made through another process (this one) must
    lock the user out of both workers, which can only hear of it from the database."""
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=live_url, timeout=10, limits=fresh_connections) as live:
        form = {"grant_type": "password", "username": account_a.username, "password": account_a.password}
        login = await live.post(TOKEN, data=form)  # the server signs with a key of its own
        assert login.status_code == 200, login.text
        headers = bearer(login.json()["access_token"])

        async def statuses() -> list[int]:
            responses = await asyncio.gather(*(live.get(ME, headers=headers) for _ in range(8)))
            return [r.status_code for r in responses]

        assert await statuses() == [200] * 8  # on fresh connections, so (very likely) both workers cache the user

        response = await client.patch(f"{USERS}/{account_a.id}", json={"is_active": False}, headers=admin.headers)
        assert response.status_code == 200, response.text

        async def locked_out_everywhere() -> bool:
            return await statuses() == [401] * 8

        await eventually(locked_out_everywhere, within=NOTIFY_WITHIN)
