"""Failed logins are limited per account and per client address within a window; then 429 with Retry-After,
and after the window logins work again. Each test runs its own app with small limits and a 2-second window
(on the real clock)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.integration.auth.support import (
    TOKEN,
    Account,
    Client,
    MakeUser,
    assert_oauth_error,
    assert_unauthenticated,
    request_token,
    sql,
)
from tests.problems import assert_problem

WINDOW = 2
WRONG = "not the password"


async def limited_app(settings: Settings, *, per_account: int, per_address: int) -> AsyncIterator[Client]:
    limited = msgspec.structs.replace(
        settings,
        login_max_failures_per_account=per_account,
        login_max_failures_per_address=per_address,
        login_failure_window=WINDOW,
    )
    async with AsyncTestClient(create_app(limited), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
async def per_account(settings: Settings) -> AsyncIterator[Client]:
    """Three failures per account; the address limit out of reach."""
    async for client in limited_app(settings, per_account=3, per_address=1000):
        yield client


@pytest.fixture
async def per_address(settings: Settings) -> AsyncIterator[Client]:
    """Three failures per client address; the account limit out of reach."""
    async for client in limited_app(settings, per_account=1000, per_address=3):
        yield client


def assert_too_many(response: httpx.Response, *, window: int = WINDOW) -> int:
    """429 with Retry-After; on the token endpoint as an RFC 6749 error too."""
    if response.request.url.path == TOKEN:
        problem = assert_oauth_error(response, 429, "invalid_grant")
    else:
        problem = assert_problem(response, 429)
    assert problem["type"] == "/problems/too-many-attempts"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window + 1
    assert "access_token" not in response.text
    return retry_after


async def logs_in_once_the_window_ends(client: Client, account: Account, started: float) -> None:
    """The right password works again once WINDOW seconds have passed since the first failure, which came after
    `started` (a refused attempt is not counted, so trying again until then changes nothing)."""
    await asyncio.sleep(max(0.0, WINDOW - (time.monotonic() - started)))
    while (response := await request_token(client, account.username, account.password)).status_code == 429:
        assert time.monotonic() - started < WINDOW + 5, "still refused long after the window"
        await asyncio.sleep(0.1)
    assert response.status_code == 200, response.text


async def fail(client: Client, identifier: str) -> None:
    assert_oauth_error(await request_token(client, identifier, WRONG), 400, "invalid_grant")


async def test_an_account_is_locked_after_its_failures_until_the_window_ends(
    per_account: Client, account_a: Account, account_b: Account, database_url: str
) -> None:
    started = time.monotonic()
    for _ in range(3):
        await fail(per_account, account_a.username)

    # Now even the right password is refused, without a token.
    assert_too_many(await request_token(per_account, account_a.username, account_a.password))
    assert_too_many(await request_token(per_account, account_a.username, WRONG))
    assert await sql(database_url, "SELECT 1 FROM refresh_tokens WHERE user_id = $1", account_a.id) == []
    # Another account from the same address is not affected.
    assert (await request_token(per_account, account_b.username, account_b.password)).status_code == 200

    await logs_in_once_the_window_ends(per_account, account_a, started)


async def test_the_limit_counts_failures_within_the_window_only(per_account: Client, account_a: Account) -> None:
    await fail(per_account, account_a.username)
    await fail(per_account, account_a.username)
    await asyncio.sleep(WINDOW + 0.3)

    await fail(per_account, account_a.username)
    await fail(per_account, account_a.username)

    assert (await request_token(per_account, account_a.username, account_a.password)).status_code == 200


async def test_a_successful_login_clears_the_accounts_failures(per_account: Client, account_a: Account) -> None:
    await fail(per_account, account_a.username)
    await fail(per_account, account_a.username)
    assert (await request_token(per_account, account_a.username, account_a.password)).status_code == 200

    await fail(per_account, account_a.username)
    await fail(per_account, account_a.username)

    assert (await request_token(per_account, account_a.username, account_a.password)).status_code == 200
    await fail(per_account, account_a.username)
    await fail(per_account, account_a.username)
    await fail(per_account, account_a.username)
    assert_too_many(await request_token(per_account, account_a.username, account_a.password))


async def test_failures_for_unknown_accounts_are_limited_too(per_account: Client) -> None:
    for _ in range(3):
        await fail(per_account, "nobody-here")
    assert_too_many(await request_token(per_account, "nobody-here", WRONG))


async def test_an_account_locked_by_username_is_locked_by_email_too(per_account: Client, account_a: Account) -> None:
    for _ in range(3):
        await fail(per_account, account_a.username)
    assert_too_many(await request_token(per_account, account_a.username, account_a.password))

    assert_too_many(await request_token(per_account, account_a.email, account_a.password))


async def test_failures_by_username_and_by_email_count_for_one_account(per_account: Client, account_a: Account) -> None:
    await fail(per_account, account_a.username)
    await fail(per_account, account_a.email)
    await fail(per_account, account_a.username)

    assert_too_many(await request_token(per_account, account_a.username, account_a.password))


async def test_an_address_is_limited_across_accounts_until_the_window_ends(
    per_address: Client, make_user: MakeUser, account_a: Account
) -> None:
    started = time.monotonic()
    others = [await make_user() for _ in range(2)]
    await fail(per_address, others[0].username)
    await fail(per_address, others[1].email)
    await fail(per_address, "nobody-here")

    # Every account is refused from this address now, even with its right password.
    assert_too_many(await request_token(per_address, account_a.username, account_a.password))
    assert_too_many(await request_token(per_address, others[0].username, others[0].password))

    await logs_in_once_the_window_ends(per_address, account_a, started)


async def test_the_session_app_allows_a_few_failures(client: Client, account_a: Account) -> None:
    """The default limits (5 per account) are not hit by a couple of typos."""
    await fail(client, account_a.username)
    await fail(client, account_a.username)
    assert (await request_token(client, account_a.username, account_a.password)).status_code == 200


async def test_wrong_current_passwords_count_against_the_account(
    per_account: Client, account_a: Account, database_url: str
) -> None:
    """Guessing through `POST /users/me/password` with a stolen token is limited like guessing at login."""
    token = (await request_token(per_account, account_a.username, account_a.password)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    hash_query = "SELECT hashed_password FROM users WHERE id = $1"
    before = await sql(database_url, hash_query, account_a.id)
    change = {"current_password": WRONG, "new_password": "a brand new password"}
    for _ in range(3):
        assert_unauthenticated(
            await per_account.post("/api/v1/users/me/password", json=change, headers=headers), error="invalid_grant"
        )
    right = change | {"current_password": account_a.password}
    assert_too_many(await per_account.post("/api/v1/users/me/password", json=right, headers=headers))
    assert_too_many(await request_token(per_account, account_a.username, account_a.password))
    assert await sql(database_url, hash_query, account_a.id) == before  # the password did not change


async def test_concurrent_wrong_passwords_check_no_more_than_the_limit(
    live_url: str, account_a: Account, database_url: str
) -> None:
    """50 wrong passwords at once against the default limit of 5 per account, on the real server's two workers:
    the count and the check are one statement, so 5 passwords are checked (400 invalid_grant) and the other 45
    refused (429)."""
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as live:
        answers = await asyncio.gather(
            *(
                live.post(TOKEN, data={"grant_type": "password", "username": account_a.username, "password": WRONG})
                for _ in range(50)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [400] * 5 + [429] * 45
        for answer in answers:
            if answer.status_code == 429:
                assert_too_many(answer, window=Settings().login_failure_window)
        right = {"grant_type": "password", "username": account_a.username, "password": account_a.password}
        assert (await live.post(TOKEN, data=right)).status_code == 429
    key = f"account:{account_a.id}"
    assert await sql(database_url, "SELECT failures FROM login_failures WHERE key = $1", key) == [(5,)]


async def test_concurrent_right_passwords_are_never_counted_as_failures(
    live_url: str, account_a: Account, database_url: str
) -> None:
    """Logins in progress hold a place under the limit until they end; beyond it a caller is asked to come back in
    a second (429, Retry-After: 1), and no success is left counted."""
    form = {"grant_type": "password", "username": account_a.username, "password": account_a.password}
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as live:
        answers = await asyncio.gather(*(live.post(TOKEN, data=form) for _ in range(12)))
        assert {answer.status_code for answer in answers} <= {200, 429}
        assert sum(answer.status_code == 200 for answer in answers) >= 5
        assert {answer.headers["retry-after"] for answer in answers if answer.status_code == 429} <= {"1"}
        assert (await live.post(TOKEN, data=form)).status_code == 200
    key = f"account:{account_a.id}"
    assert await sql(database_url, "SELECT failures, pending FROM login_failures WHERE key = $1", key) == [(0, 0)]
