"""/api/v1/api-keys: admins make, list and revoke keys; a key works as X-API-Key or a bearer token
until it is revoked or expires; its secret is shown once and never stored."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accounts.core.security import secret_hash
from tests.database import insert_api_key
from tests.integration.auth.support import (
    API_KEYS,
    ME,
    USERS,
    Client,
    LoggedIn,
    assert_unauthenticated,
    bearer,
    eventually,
    sql,
)
from tests.problems import assert_problem

KEY_FORMAT = re.compile(r"acck_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
READ_FIELDS = {"id", "name", "prefix", "scopes", "created_by", "created_at", "expires_at", "last_used_at", "revoked_at"}


async def create_key(client: Client, admin: LoggedIn, **body: Any) -> dict[str, Any]:
    response = await client.post(
        API_KEYS, json={"name": "billing", "scopes": ["users:read"]} | body, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def list_keys(client: Client, admin: LoggedIn) -> list[dict[str, Any]]:
    response = await client.get(API_KEYS, headers=admin.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# --- create -------------------------------------------------------------------------------------


async def test_create_shows_the_secret_once(client: Client, admin: LoggedIn, database_url: str) -> None:
    response = await client.post(
        API_KEYS, json={"name": "billing", "scopes": ["users:write", "users:read", "users:read"]}, headers=admin.headers
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == READ_FIELDS | {"key"}
    assert response.headers["location"] == f"{API_KEYS}/{created['id']}"
    match = KEY_FORMAT.fullmatch(created["key"])
    assert match, created["key"]
    assert match.group(1) == created["prefix"]
    assert created["name"] == "billing"
    assert created["scopes"] == ["users:read", "users:write"]
    assert created["created_by"] == admin.id
    assert created["created_at"].endswith("Z")
    assert created["expires_at"] is None
    assert created["last_used_at"] is None
    assert created["revoked_at"] is None

    listed = await client.get(API_KEYS, headers=admin.headers)
    (item,) = listed.json()["items"]
    assert set(item) == READ_FIELDS
    assert item == {name: created[name] for name in READ_FIELDS}
    assert created["key"] not in listed.text
    assert created["key"].split("_", 2)[2] not in listed.text

    (row,) = await sql(database_url, "SELECT * FROM api_keys")
    assert bytes(row["secret_hash"]) == secret_hash(created["key"])
    stored = " ".join(str(value) for value in row.values())
    assert created["key"].split("_", 2)[2] not in stored


async def test_every_key_is_different(client: Client, admin: LoggedIn) -> None:
    keys = [await create_key(client, admin) for _ in range(3)]
    assert len({k["key"] for k in keys}) == 3
    assert len({k["prefix"] for k in keys}) == 3


async def test_list_is_newest_first_and_includes_revoked_keys(client: Client, admin: LoggedIn) -> None:
    first = await create_key(client, admin, name="first")
    second = await create_key(client, admin, name="second")
    assert (await client.delete(f"{API_KEYS}/{first['id']}", headers=admin.headers)).status_code == 204

    items = await list_keys(client, admin)

    assert [item["id"] for item in items] == [second["id"], first["id"]]
    assert items[1]["revoked_at"] is not None
    assert items[0]["revoked_at"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "scopes": ["admin"]}, "scopes[0]"),
        ({"name": "k", "scopes": ["users:read", "users:delete"]}, "scopes[1]"),
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": "users:read"}, "scopes"),
        ({"name": "k"}, "scopes"),
        ({"name": "", "scopes": ["users:read"]}, "name"),
        ({"name": "x" * 101, "scopes": ["users:read"]}, "name"),
        ({"name": "two\nlines", "scopes": ["users:read"]}, "name"),
        ({"scopes": ["users:read"]}, "name"),
        ({"name": "k", "scopes": ["users:read"], "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "k", "scopes": ["users:read"], "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "scopes": ["users:read"], "key": "acck_000000000000_" + "A" * 43}, "key"),
        ({"name": "k", "scopes": ["users:read"], "prefix": "000000000000"}, "prefix"),
    ],
)
async def test_create_rejects_a_bad_body(
    client: Client, admin: LoggedIn, database_url: str, body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post(API_KEYS, json=body, headers=admin.headers), 400, field=field)
    assert await sql(database_url, "SELECT 1 FROM api_keys") == []


async def test_an_expiry_without_an_offset_is_400(client: Client, admin: LoggedIn, database_url: str) -> None:
    body = {"name": "k", "scopes": ["users:read"], "expires_at": "2030-01-01T00:00:00"}
    assert_problem(await client.post(API_KEYS, json=body, headers=admin.headers), 400, field="expires_at")
    assert await sql(database_url, "SELECT 1 FROM api_keys") == []


async def test_an_expiry_with_an_offset_is_stored_in_utc(client: Client, admin: LoggedIn) -> None:
    created = await create_key(client, admin, expires_at="2030-01-01T05:00:00+05:00")
    assert created["expires_at"] == "2030-01-01T00:00:00Z"


async def test_create_takes_json_only(client: Client, admin: LoggedIn) -> None:
    response = await client.post(API_KEYS, data={"name": "k", "scopes": "users:read"}, headers=admin.headers)
    assert_problem(response, 415)


# --- use ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_a_key_works_in_either_header_with_its_scopes(client: Client, admin: LoggedIn, header: str) -> None:
    key = (await create_key(client, admin, scopes=["users:read"]))["key"]
    headers = {"X-API-Key": key} if header == "x-api-key" else bearer(key)

    response = await client.get(USERS, headers=headers)
    assert response.status_code == 200, response.text
    assert [u["id"] for u in response.json()["items"]] == [admin.id]
    assert (await client.get(f"{USERS}/{admin.id}", headers=headers)).status_code == 200
    assert_problem(await client.post(USERS, json={"email": "k@example.com", "username": "kk"}, headers=headers), 403)
    assert_problem(await client.get(ME, headers=headers), 403)
    assert_problem(await client.get(API_KEYS, headers=headers), 403)


async def test_a_key_made_by_an_admin_is_no_admin(client: Client, admin: LoggedIn) -> None:
    """Even with both scopes a key is a service, not a user: it cannot make keys or grant admin rights."""
    key = (await create_key(client, admin, scopes=["users:read", "users:write"]))["key"]
    headers = {"X-API-Key": key}
    assert_problem(await client.post(API_KEYS, json={"name": "n", "scopes": ["users:read"]}, headers=headers), 403)
    response = await client.patch(f"{USERS}/{admin.id}", json={"is_superuser": False}, headers=headers)
    assert_problem(response, 403)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), id="last-character"),
        pytest.param(lambda k: k[:5] + "0" * 12 + k[17:], id="other-prefix"),
        pytest.param(lambda k: k[:-1], id="one-short"),
        pytest.param(lambda k: k + "A", id="one-long"),
        pytest.param(lambda k: k.upper(), id="upper-case"),
        pytest.param(lambda k: k[:18], id="prefix-only"),
        pytest.param(lambda k: " " + k, id="leading-space"),
    ],
)
async def test_a_tampered_key_is_401(client: Client, admin: LoggedIn, tamper: Any) -> None:
    key = (await create_key(client, admin))["key"]
    assert (await client.get(USERS, headers={"X-API-Key": key})).status_code == 200
    assert_unauthenticated(await client.get(USERS, headers={"X-API-Key": tamper(key)}))


async def test_last_used_at_is_recorded_after_use(client: Client, admin: LoggedIn) -> None:
    created = await create_key(client, admin)
    before_use = datetime.now(UTC) - timedelta(seconds=1)
    assert (await client.get(USERS, headers={"X-API-Key": created["key"]})).status_code == 200

    async def recorded() -> bool:
        (item,) = await list_keys(client, admin)
        return item["last_used_at"] is not None

    await eventually(recorded, within=3.0)
    (item,) = await list_keys(client, admin)
    assert before_use <= datetime.fromisoformat(item["last_used_at"]) <= datetime.now(UTC)


async def test_an_unused_key_has_no_last_use(client: Client, admin: LoggedIn) -> None:
    await create_key(client, admin)
    await asyncio.sleep(0.3)
    (item,) = await list_keys(client, admin)
    assert item["last_used_at"] is None


# --- revoke and expire --------------------------------------------------------------------------


async def test_a_revoked_key_is_401_at_once(client: Client, admin: LoggedIn) -> None:
    created = await create_key(client, admin)
    headers = {"X-API-Key": created["key"]}
    assert (await client.get(USERS, headers=headers)).status_code == 200

    response = await client.delete(f"{API_KEYS}/{created['id']}", headers=admin.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert_unauthenticated(await client.get(USERS, headers=headers))
    assert_unauthenticated(await client.get(USERS, headers=bearer(created["key"])))
    (item,) = await list_keys(client, admin)
    assert item["revoked_at"] is not None


async def test_revoking_twice_is_204_and_keeps_the_first_time(client: Client, admin: LoggedIn) -> None:
    created = await create_key(client, admin)
    assert (await client.delete(f"{API_KEYS}/{created['id']}", headers=admin.headers)).status_code == 204
    (first,) = await list_keys(client, admin)
    assert (await client.delete(f"{API_KEYS}/{created['id']}", headers=admin.headers)).status_code == 204
    (second,) = await list_keys(client, admin)
    assert second["revoked_at"] == first["revoked_at"]


async def test_revoking_one_key_leaves_the_others(client: Client, admin: LoggedIn) -> None:
    revoked, kept = await create_key(client, admin), await create_key(client, admin)
    assert (await client.delete(f"{API_KEYS}/{revoked['id']}", headers=admin.headers)).status_code == 204
    assert (await client.get(USERS, headers={"X-API-Key": kept["key"]})).status_code == 200


async def test_revoking_an_unknown_key_is_404(client: Client, admin: LoggedIn) -> None:
    problem = assert_problem(await client.delete(f"{API_KEYS}/{uuid.uuid4()}", headers=admin.headers), 404)
    assert problem["type"] == "/problems/not-found"


async def test_revoking_with_a_malformed_id_is_400(client: Client, admin: LoggedIn) -> None:
    assert_problem(await client.delete(f"{API_KEYS}/not-a-uuid", headers=admin.headers), 400, field="key_id")


@pytest.mark.parametrize("caller", ["anonymous", "user", "key"])
async def test_only_an_admin_revokes(
    client: Client, admin: LoggedIn, user_a: LoggedIn, database_url: str, caller: str
) -> None:
    created = await create_key(client, admin)
    url = f"{API_KEYS}/{created['id']}"
    if caller == "anonymous":
        assert_unauthenticated(await client.delete(url), error=None)
    else:
        headers = (
            user_a.headers if caller == "user" else {"X-API-Key": await insert_api_key(database_url, ["users:write"])}
        )
        assert_problem(await client.delete(url, headers=headers), 403)
    assert (await client.get(USERS, headers={"X-API-Key": created["key"]})).status_code == 200


async def test_a_key_stops_working_when_it_expires(client: Client, admin: LoggedIn) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    created = await create_key(client, admin, expires_at=expires_at.isoformat())
    assert datetime.fromisoformat(created["expires_at"]) == expires_at
    headers = {"X-API-Key": created["key"]}
    assert (await client.get(USERS, headers=headers)).status_code == 200

    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.1)

    problem = assert_unauthenticated(await client.get(USERS, headers=headers))
    assert "expired" in problem["detail"]


async def test_a_key_that_expired_before_it_was_first_seen_is_401(client: Client, database_url: str) -> None:
    key = await insert_api_key(database_url, ["users:read"])
    await sql(database_url, "UPDATE api_keys SET expires_at = now() - interval '1 second'")
    assert_unauthenticated(await client.get(USERS, headers={"X-API-Key": key}))


async def test_a_key_revoked_in_the_database_stops_working_within_two_seconds(
    client: Client, database_url: str
) -> None:
    key = await insert_api_key(database_url, ["users:read"])
    headers = {"X-API-Key": key}
    assert (await client.get(USERS, headers=headers)).status_code == 200  # now the worker has the key cached

    await sql(database_url, "UPDATE api_keys SET revoked_at = now()")

    async def refused() -> bool:
        return (await client.get(USERS, headers=headers)).status_code == 401

    await eventually(refused, within=2.0)


async def test_a_scope_removed_in_the_database_is_gone_within_two_seconds(client: Client, database_url: str) -> None:
    key = await insert_api_key(database_url, ["users:read", "users:write"])
    headers = {"X-API-Key": key}
    assert (await client.get(USERS, headers=headers)).status_code == 200

    await sql(database_url, "UPDATE api_keys SET scopes = ARRAY['users:write']")

    async def refused() -> bool:
        return (await client.get(USERS, headers=headers)).status_code == 403

    await eventually(refused, within=2.0)
