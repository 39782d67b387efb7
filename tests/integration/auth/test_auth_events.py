"""What sign-in records in the event log, in the transaction of the change: logins in the audit trail only, ended
sessions, API keys and second factors in the feed; never a password, code or token in `data`."""

from __future__ import annotations

import json
from typing import Any

import pyotp

from tests.integration.auth.support import (
    API_KEYS,
    TOKEN,
    Account,
    Client,
    LoggedIn,
    log_in,
    request_token,
    sql,
    unverified_parts,
)


async def events_of(database_url: str, subject_id: str) -> list[dict[str, Any]]:
    rows = await sql(
        database_url,
        "SELECT type, actor_type, actor_id, data, in_feed FROM events WHERE subject_id = $1 ORDER BY seq",
        subject_id,
    )
    return [{**dict(row), "data": json.loads(row["data"])} for row in rows]


async def test_logins_are_audit_events_of_their_user(client: Client, account_a: Account, database_url: str) -> None:
    assert (await request_token(client, account_a.username, "not the password")).status_code == 400
    login = await log_in(client, account_a)
    events = await events_of(database_url, account_a.id)
    assert [(e["type"], e["in_feed"]) for e in events] == [("login.failed", False), ("login.succeeded", False)]
    assert events[0]["data"] == {"method": "password", "reason": "wrong password"}
    sid = unverified_parts(login.access_token)[1]["sid"]
    assert events[1]["data"] == {"method": "pwd", "session_id": sid}
    assert {(e["actor_type"], e["actor_id"]) for e in events} == {("user", account_a.id)}
    assert account_a.password not in json.dumps(events)
    # Unknown accounts leave nothing: there is no subject to log.
    assert (await request_token(client, "nobody-at-all", "whatever")).status_code == 400
    assert (
        await sql(database_url, "SELECT 1 FROM events WHERE type = 'login.failed' AND subject_id <> $1", account_a.id)
        == []
    )


async def test_ending_sessions_and_keys_and_factors_are_feed_events(
    client: Client, user_a: LoggedIn, admin: LoggedIn, database_url: str
) -> None:
    await client.post("/api/v1/auth/logout", json={"refresh_token": user_a.refresh_token})
    started = (await client.post("/api/v1/users/me/mfa/totp", headers=admin.headers)).json()
    code = pyotp.TOTP(started["secret"]).now()
    assert (
        await client.post("/api/v1/users/me/mfa/totp/confirm", headers=admin.headers, json={"code": code})
    ).status_code == 200
    created = await client.post(API_KEYS, headers=admin.headers, json={"name": "billing", "scopes": ["users:read"]})
    key_id = created.json()["id"]
    assert (await client.delete(f"{API_KEYS}/{key_id}", headers=admin.headers)).status_code == 204

    (ended,) = [e for e in await events_of(database_url, user_a.id) if e["in_feed"]]
    assert ended["type"] == "session.revoked"
    assert ended["data"] == {"session_id": unverified_parts(user_a.access_token)[1]["sid"], "reason": "logout"}
    assert [e["type"] for e in await events_of(database_url, key_id)] == ["api_key.created", "api_key.revoked"]
    key_created = (await events_of(database_url, key_id))[0]
    assert created.json()["key"] not in json.dumps(key_created)
    assert (key_created["actor_type"], key_created["actor_id"]) == ("user", admin.id)
    enabled = [e for e in await events_of(database_url, admin.id) if e["in_feed"]]
    assert [(e["type"], e["data"]) for e in enabled] == [("mfa.enabled", {"kind": "totp"})]
    assert started["secret"] not in json.dumps(enabled)


async def test_a_reused_refresh_token_is_a_reuse_event(client: Client, user_a: LoggedIn, database_url: str) -> None:
    rotated = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": user_a.refresh_token})
    assert rotated.status_code == 200
    reused = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": user_a.refresh_token})
    assert reused.status_code == 400
    (event,) = [e for e in await events_of(database_url, user_a.id) if e["in_feed"]]
    assert event["type"] == "session.reuse_detected"
    assert event["data"]["reason"] == "reuse"
