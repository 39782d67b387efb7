"""Logging in with a passkey, driven over HTTP by a software authenticator written against the WebAuthn spec: alone
(passwordless and usernameless, by a discoverable credential) and as the second step of a password login."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar import Litestar

from tests.integration.auth.support import (
    ME,
    Account,
    Client,
    LoggedIn,
    bearer,
    request_token,
    sql,
    unverified_parts,
)
from tests.integration.passkeys.authenticator import SoftAuthenticator
from tests.integration.passkeys.support import register_passkey
from tests.problems import assert_problem

OPTIONS = "/api/v1/auth/passkey/options"
LOGIN = "/api/v1/auth/passkey/login"


@pytest.fixture
def authenticator(app: Litestar) -> SoftAuthenticator:
    return SoftAuthenticator(origin=app.state.settings.origins[0])


async def start(client: Client, **body: str) -> dict[str, Any]:
    response = await client.post(OPTIONS, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    started: dict[str, Any] = response.json()
    return started


async def answer(
    client: Client, started: dict[str, Any], authenticator: SoftAuthenticator, **fields: Any
) -> httpx.Response:
    credential = fields.pop("credential", None) or authenticator.get(started["options"])
    return await client.post(LOGIN, json={"challenge_id": started["challenge_id"], "credential": credential, **fields})


async def test_a_passkey_alone_logs_its_user_in(
    client: Client, user_a: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    await register_passkey(client, user_a.headers, authenticator)
    started = await start(client)
    assert started["options"].get("allowCredentials", []) == []  # usernameless: the browser picks
    assert started["options"]["userVerification"] == "required"
    logged_in = await answer(client, started, authenticator)
    assert logged_in.status_code == 200, logged_in.text
    tokens = logged_in.json()
    _, claims = unverified_parts(tokens["access_token"])
    assert claims["sub"] == user_a.id
    assert claims["amr"] == ["hwk", "user", "mfa"]
    assert claims["acr"] == "urn:accounts:acr:2fa"
    assert (await client.get(ME, headers=bearer(tokens["access_token"]))).status_code == 200
    assert_problem(await answer(client, started, authenticator), 401)  # a challenge works once


async def test_a_passkey_is_the_second_step_of_a_password_login(
    client: Client, user_a: LoggedIn, user_b: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    await register_passkey(client, user_a.headers, authenticator)
    other = SoftAuthenticator(origin=authenticator.origin)
    await register_passkey(client, user_b.headers, other)
    challenge = await request_token(client, user_a.account.username, user_a.account.password)
    assert challenge.status_code == 403, challenge.text
    assert challenge.json()["mfa_methods"] == ["passkey"]
    mfa_token = challenge.json()["mfa_token"]

    started = await start(client, mfa_token=mfa_token)
    assert len(started["options"]["allowCredentials"]) == 1
    # Another user's passkey does not finish this user's login.
    foreign = other.get({**started["options"], "allowCredentials": []})
    assert_problem(await answer(client, started, authenticator, credential=foreign, mfa_token=mfa_token), 401)
    started = await start(client, mfa_token=mfa_token)
    logged_in = await answer(client, started, authenticator, mfa_token=mfa_token)
    assert logged_in.status_code == 200, logged_in.text
    _, claims = unverified_parts(logged_in.json()["access_token"])
    assert claims["amr"] == ["pwd", "hwk", "mfa"]
    assert_problem(await client.post(OPTIONS, json={"mfa_token": mfa_token}), 401)  # the login is done


async def test_a_cloned_authenticator_is_refused_and_counted(
    client: Client, user_a: LoggedIn, authenticator: SoftAuthenticator, database_url: str
) -> None:
    await register_passkey(client, user_a.headers, authenticator)
    clone = authenticator.clone()
    assert (await answer(client, await start(client), authenticator)).status_code == 200
    refused = await answer(client, await start(client), clone)  # its counter did not move past the original's
    assert_problem(refused, 401)
    assert "cloned" in refused.json()["detail"]
    (row,) = await sql(database_url, "SELECT failures FROM login_failures WHERE key = $1", f"account:{user_a.id}")
    assert row["failures"] == 1
    assert (await answer(client, await start(client), authenticator)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"challenge_id": "not-a-uuid", "credential": {}},
        {"challenge_id": "0190b4a4-0000-7000-8000-000000000000", "credential": {"id": "\x00"}},
        {"challenge_id": "0190b4a4-0000-7000-8000-000000000000", "credential": "x" * 100},
        [],
    ],
)
async def test_a_malformed_passkey_login_is_a_400(client: Client, body: Any) -> None:
    assert_problem(await client.post(LOGIN, json=body), 400)


async def test_an_unknown_mfa_token_gets_no_options(client: Client, account_a: Account) -> None:
    assert_problem(await client.post(OPTIONS, json={"mfa_token": "made-up"}), 401)
    assert_problem(await client.post(OPTIONS, json={"mfa_token": 5}), 400)
