"""TOTP (RFC 6238) with recovery codes, and the login that asks for them: codes made by pyotp, an independent
implementation; every step over HTTP against the session app, the stored rows read with SQL."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
import pytest
from uuid_utils.compat import uuid7

from tests.integration.auth.support import (
    ME,
    TOKEN,
    Account,
    Client,
    LoggedIn,
    MakeUser,
    assert_oauth_error,
    bearer,
    log_in,
    request_token,
    sql,
    unverified_parts,
)
from tests.problems import assert_problem

MFA = f"{ME}/mfa"
MFA_OTP = "http://auth0.com/oauth/grant-type/mfa-otp"
MFA_RECOVERY_CODE = "http://auth0.com/oauth/grant-type/mfa-recovery-code"


def code_at(secret: str, steps_ahead: int = 0) -> str:
    """pyotp's code for the step `steps_ahead` from now (the service accepts one step either side)."""
    return pyotp.TOTP(secret).at(time.time(), counter_offset=steps_ahead)


async def enrol(client: Client, user: LoggedIn) -> tuple[str, list[str]]:
    """Switch TOTP on for the user: the secret and the recovery codes."""
    started = await client.post(f"{MFA}/totp", headers=user.headers)
    assert started.status_code == 200, started.text
    secret = started.json()["secret"]
    confirmed = await client.post(f"{MFA}/totp/confirm", headers=user.headers, json={"code": code_at(secret)})
    assert confirmed.status_code == 200, confirmed.text
    return secret, confirmed.json()["recovery_codes"]


def mfa_token_of(response: httpx.Response) -> str:
    """The `mfa_required` challenge of a password login, as Auth0's MFA grant answers it."""
    assert response.status_code == 403, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == "mfa_required"
    assert body["mfa_methods"] == ["otp", "recovery_code"]
    assert 0 < body["expires_in"] <= 300
    token: str = body["mfa_token"]
    return token


async def second_step(client: Client, mfa_token: str, **fields: str) -> httpx.Response:
    grant = MFA_OTP if "otp" in fields else MFA_RECOVERY_CODE
    return await client.post(TOKEN, data={"grant_type": grant, "mfa_token": mfa_token, **fields})


@pytest.fixture
async def enrolled(client: Client, user_a: LoggedIn) -> tuple[LoggedIn, str, list[str]]:
    secret, codes = await enrol(client, user_a)
    return user_a, secret, codes


async def test_enrolment_gives_a_standard_otpauth_uri_and_ten_recovery_codes(
    client: Client, user_a: LoggedIn, database_url: str
) -> None:
    started = await client.post(f"{MFA}/totp", headers=user_a.headers)
    assert started.status_code == 200, started.text
    body = started.json()
    uri = urlparse(body["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    query = parse_qs(uri.query)
    assert query["secret"] == [body["secret"]]
    assert query["issuer"] == ["Accounts"]
    assert pyotp.parse_uri(body["otpauth_uri"]).secret == body["secret"]
    assert (await client.get(MFA, headers=user_a.headers)).json()["totp"] is False  # pending until confirmed

    wrong = await client.post(f"{MFA}/totp/confirm", headers=user_a.headers, json={"code": code_at(body["secret"], 5)})
    assert_problem(wrong, 400)
    confirmed = await client.post(f"{MFA}/totp/confirm", headers=user_a.headers, json={"code": code_at(body["secret"])})
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    status = (await client.get(MFA, headers=user_a.headers)).json()
    assert status["totp"] is True
    assert status["recovery_codes_left"] == 10
    assert_problem(await client.post(f"{MFA}/totp", headers=user_a.headers), 409)

    # At rest the secret is sealed: neither its bytes nor its base32 are in the row, and it is not the same twice.
    (row,) = await sql(database_url, "SELECT sealed_secret FROM totp_factors WHERE user_id = $1", user_a.account.id)
    raw = base64.b32decode(body["secret"] + "=" * (-len(body["secret"]) % 8))
    assert raw not in row["sealed_secret"]
    assert body["secret"].encode() not in row["sealed_secret"]
    (notice,) = await sql(
        database_url,
        "SELECT subject FROM outbox_messages WHERE kind = 'security_notice' AND recipient = $1",
        user_a.account.email,
    )
    assert notice["subject"] == "Two-step verification is on"


async def test_a_password_login_then_needs_a_code_and_the_tokens_say_so(
    client: Client, enrolled: tuple[LoggedIn, str, list[str]]
) -> None:
    user, secret, _ = enrolled
    challenge = await request_token(client, user.account.username, user.account.password)
    mfa_token = mfa_token_of(challenge)
    assert "access_token" not in challenge.json()

    wrong = await second_step(client, mfa_token, otp=code_at(secret, 4))
    assert_oauth_error(wrong, 400, "invalid_grant")
    answered = await second_step(client, mfa_token, otp=code_at(secret, 1))
    assert answered.status_code == 200, answered.text
    _, claims = unverified_parts(answered.json()["access_token"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == "urn:accounts:acr:2fa"
    me = await client.get(ME, headers=bearer(answered.json()["access_token"]))
    assert me.status_code == 200

    # The challenge works once; the code too (replay), and an older code after it never.
    assert_oauth_error(await second_step(client, mfa_token, otp=code_at(secret, 1)), 400, "invalid_grant")
    again = mfa_token_of(await request_token(client, user.account.username, user.account.password))
    assert_oauth_error(await second_step(client, again, otp=code_at(secret, 1)), 400, "invalid_grant")
    assert_oauth_error(await second_step(client, again, otp=code_at(secret, 0)), 400, "invalid_grant")

    refreshed = await client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": answered.json()["refresh_token"]}
    )
    _, claims = unverified_parts(refreshed.json()["access_token"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]  # a refresh keeps how the session began


async def test_a_user_without_a_factor_gets_tokens_that_say_password(client: Client, user_a: LoggedIn) -> None:
    _, claims = unverified_parts(user_a.access_token)
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:accounts:acr:1fa"
    assert claims["sid"]


async def test_each_recovery_code_logs_in_once(client: Client, enrolled: tuple[LoggedIn, str, list[str]]) -> None:
    user, _, codes = enrolled
    mfa_token = mfa_token_of(await request_token(client, user.account.username, user.account.password))
    typed = codes[0].lower().replace("-", " ")  # case, dashes and spaces do not matter
    answered = await second_step(client, mfa_token, recovery_code=typed)
    assert answered.status_code == 200, answered.text
    _, claims = unverified_parts(answered.json()["access_token"])
    assert claims["amr"] == ["pwd", "rc", "mfa"]
    mfa_token = mfa_token_of(await request_token(client, user.account.username, user.account.password))
    assert_oauth_error(await second_step(client, mfa_token, recovery_code=codes[0]), 400, "invalid_grant")
    assert (await client.get(MFA, headers=user.headers)).json()["recovery_codes_left"] == 9


async def test_fifty_concurrent_wrong_codes_check_at_most_the_limit(
    client: Client, enrolled: tuple[LoggedIn, str, list[str]], database_url: str
) -> None:
    user, secret, _ = enrolled
    mfa_token = mfa_token_of(await request_token(client, user.account.username, user.account.password))
    right = code_at(secret, 1)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    answers = await asyncio.gather(*(second_step(client, mfa_token, otp=wrong) for _ in range(50)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [400] * 5 + [429] * 45, statuses
    assert all("retry-after" in answer.headers for answer in answers if answer.status_code == 429)
    (row,) = await sql(database_url, "SELECT failures FROM login_failures WHERE key = $1", f"account:{user.id}")
    assert row["failures"] == 5
    # The account is locked for codes and passwords alike, the right code included.
    assert (await second_step(client, mfa_token, otp=right)).status_code == 429


async def test_turning_totp_off_needs_the_password_and_a_code(
    client: Client, enrolled: tuple[LoggedIn, str, list[str]], database_url: str
) -> None:
    user, secret, codes = enrolled
    wrong_password = await client.post(
        f"{MFA}/totp/disable", headers=user.headers, json={"password": "not it at all", "code": code_at(secret, 1)}
    )
    assert wrong_password.status_code == 401
    neither = await client.post(f"{MFA}/totp/disable", headers=user.headers, json={"password": user.account.password})
    assert_problem(neither, 400)
    renewed = await client.post(
        f"{MFA}/recovery-codes",
        headers=user.headers,
        json={"password": user.account.password, "code": code_at(secret, 1)},
    )
    assert renewed.status_code == 200, renewed.text
    assert set(renewed.json()["recovery_codes"]).isdisjoint(codes)
    off = await client.post(
        f"{MFA}/totp/disable",
        headers=user.headers,
        json={"password": user.account.password, "recovery_code": renewed.json()["recovery_codes"][0]},
    )
    assert off.status_code == 204, off.text
    assert (await request_token(client, user.account.username, user.account.password)).status_code == 200
    assert await sql(database_url, "SELECT 1 FROM recovery_codes WHERE user_id = $1", user.account.id) == []
    subjects = {
        row["subject"]
        for row in await sql(
            database_url,
            "SELECT subject FROM outbox_messages WHERE kind = 'security_notice' AND recipient = $1",
            user.account.email,
        )
    }
    assert subjects == {"Two-step verification is on", "New recovery codes", "Two-step verification is off"}


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"mfa_token": "made-up", "otp": "123456"}, 400),
        ({"mfa_token": "x" * 257, "otp": "123456"}, 400),
        ({"mfa_token": "a\x00b", "otp": "123456"}, 400),
        ({"mfa_token": "made-up", "otp": "12345a"}, 400),
        ({"mfa_token": "made-up", "otp": "1234567"}, 400),
        ({"otp": "123456"}, 400),
        ({"mfa_token": "made-up"}, 400),
    ],
)
async def test_a_malformed_second_step_is_a_400(client: Client, fields: dict[str, str], status: int) -> None:
    response = await client.post(TOKEN, data={"grant_type": MFA_OTP, **fields})
    assert response.status_code == status, response.text
    assert response.json()["error"] in {"invalid_grant", "invalid_request"}


@pytest.mark.parametrize(
    "body",
    [
        {"code": "12345"},
        {"code": 123456},
        {"code": "\uff11\uff12\uff13\uff14\uff15\uff16"},
        {"code": "123456", "extra": 1},
        {},
        [],
        "x",
    ],
)
async def test_a_malformed_confirmation_is_a_400(client: Client, user_a: LoggedIn, body: Any) -> None:
    await client.post(f"{MFA}/totp", headers=user_a.headers)
    assert_problem(await client.post(f"{MFA}/totp/confirm", headers=user_a.headers, json=body), 400)


async def test_an_admin_resets_a_users_factors(
    client: Client,
    enrolled: tuple[LoggedIn, str, list[str]],
    admin: LoggedIn,
    make_user: MakeUser,
    database_url: str,
) -> None:
    user, _, _ = enrolled
    other: Account = await make_user()
    reset = await client.delete(f"/api/v1/users/{user.id}/mfa", headers=admin.headers)
    assert reset.status_code == 204, reset.text
    assert (await request_token(client, user.account.username, user.account.password)).status_code == 200
    assert (await client.delete(f"/api/v1/users/{other.id}/mfa", headers=admin.headers)).status_code == 204
    assert (await client.delete(f"/api/v1/users/{uuid7()}/mfa", headers=admin.headers)).status_code == 404
    assert (await client.delete(f"/api/v1/users/{user.id}/mfa", headers=user.headers)).status_code == 403
    subjects = {
        row["subject"]
        for row in await sql(
            database_url,
            "SELECT subject FROM outbox_messages WHERE kind = 'security_notice' AND recipient = $1",
            user.account.email,
        )
    }
    assert "Your second factors were reset" in subjects
    assert (await log_in(client, user.account)).access_token
