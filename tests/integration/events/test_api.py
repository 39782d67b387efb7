"""The events of user and client changes, as the feed and the audit trail give them: their shape, actor and
request id, who may read them, and a precise 400 for every bad parameter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.events.services import AuditTrail
from tests.integration.auth.support import LoggedIn, sql

Client = AsyncTestClient[Litestar]
EVENTS = "/api/v1/events"
AUDIT = "/api/v1/audit-events"
SECRETS = ("password", "hash", "secret", "token")


async def feed(client: Client, key: str, count: int, **params: Any) -> list[dict[str, Any]]:
    """The first `count` feed events after `after`, a page at a time. The feed holds back what committed after
    the oldest writing transaction still open (on the whole server, whoever runs it), so they may take a moment."""
    items: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + 20
    while len(items) < count and asyncio.get_running_loop().time() < deadline:
        response = await client.get(EVENTS, params={"limit": 2, **params}, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        params["after"] = page["next"]
        if not page["items"]:
            await asyncio.sleep(0.02)
    return items


def _no_secret(value: Any) -> None:
    text = repr(value).lower()
    assert not any(word in text for word in SECRETS), value


async def test_user_changes_are_events_with_their_actor_and_request(
    client: Client, service_key: str, reader_key: str, admin: LoggedIn
) -> None:
    as_key = {"X-API-Key": service_key}
    created = await client.post(
        "/api/v1/users",
        json={"email": "Ada@Example.com", "username": "ada", "password": "a long unguessable phrase 1"},
        headers=as_key | {"X-Request-ID": "req-create-ada"},
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    path = f"/api/v1/users/{user_id}"
    changes = [
        ({"bio": "Engines."}, [("user.updated", {"changes": {"bio": "Engines."}})]),
        ({"bio": "Engines.", "full_name": "Ada"}, [("user.updated", {"changes": {"full_name": "Ada"}})]),
        ({"bio": "Engines."}, []),  # nothing changed: no event
        ({"is_active": False}, [("user.updated", {"changes": {"is_active": False}}), ("user.deactivated", {})]),
        ({"is_active": False}, []),
        ({"is_active": True}, [("user.updated", {"changes": {"is_active": True}}), ("user.reactivated", {})]),
    ]
    expected: list[tuple[str, dict[str, Any]]] = [
        (
            "user.created",
            {
                "email": "ada@example.com",
                "username": "ada",
                "full_name": None,
                "is_active": True,
                "is_superuser": False,
            },
        )
    ]
    for body, events in changes:
        response = await client.patch(path, json=body, headers=admin.headers)
        assert response.status_code == 200, response.text
        expected += events
    assert (await client.delete(path, headers=as_key)).status_code == 204
    expected.append(("user.deleted", {}))

    items = await feed(client, reader_key, len(expected), subject=f"user:{user_id}")
    assert [(item["type"], item["data"]) for item in items] == expected
    for item in items:
        _no_secret(item["data"])
        assert item["subject"] == {"type": "user", "id": user_id}
    key_actor = {"type": "api_key", "id": items[0]["actor"]["id"]}
    assert [item["actor"] for item in items] == [key_actor] + [{"type": "user", "id": admin.id}] * 6 + [key_actor]
    assert items[0]["request_id"] == "req-create-ada"
    assert all(item["request_id"] for item in items)
    datetime.fromisoformat(items[0]["occurred_at"])

    # The audit trail has them too, newest first, filtered by actor, subject, type and time.
    audit = await client.get(AUDIT, params={"subject": f"user:{user_id}"}, headers=admin.headers)
    assert audit.status_code == 200, audit.text
    assert [item["id"] for item in audit.json()["items"]] == [item["id"] for item in reversed(items)]
    assert audit.json()["total"] == len(items)
    by_admin = await client.get(
        AUDIT,
        params={"actor": f"user:{admin.id}", "type": ["user.deactivated", "user.reactivated"]},
        headers=admin.headers,
    )
    assert [item["type"] for item in by_admin.json()["items"]] == ["user.reactivated", "user.deactivated"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await client.get(AUDIT, params={"from": future}, headers=admin.headers)
    assert later.json()["items"] == []


async def test_client_changes_are_events_without_secrets(client: Client, admin: LoggedIn, reader_key: str) -> None:
    created = await client.post(
        "/api/v1/oauth-clients", json={"name": "billing", "scopes": ["users:read"]}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    client_id = created.json()["client_id"]
    rotated = await client.post(f"/api/v1/oauth-clients/{client_id}/secret", json={}, headers=admin.headers)
    assert rotated.status_code in {200, 201}, rotated.text
    assert (await client.delete(f"/api/v1/oauth-clients/{client_id}", headers=admin.headers)).status_code == 204
    items = await feed(client, reader_key, 3, subject=f"client:{client_id}")
    assert [item["type"] for item in items] == ["client.created", "client.secret_rotated", "client.deleted"]
    assert items[0]["data"] == {"name": "billing", "scopes": ["users:read"]}
    for item in items:
        _no_secret(item["data"])


async def test_who_may_read(client: Client, service_key: str, reader_key: str, admin: LoggedIn) -> None:
    for path, headers, status in [
        (EVENTS, {"X-API-Key": reader_key}, 200),
        (EVENTS, admin.headers, 200),
        (EVENTS, {"X-API-Key": service_key}, 403),
        (EVENTS, {}, 401),
        (f"{EVENTS}/stream", {"X-API-Key": service_key}, 403),
        (AUDIT, admin.headers, 200),
        (AUDIT, {"X-API-Key": reader_key}, 403),
        (AUDIT, {}, 401),
    ]:
        response = await client.get(path, headers=headers)
        assert response.status_code == status, (path, headers, response.text)


BAD_PARAMETERS = [
    (EVENTS, {"after": "nope"}, "after"),
    (EVENTS, {"after": "A" * 21 + "\x00"}, "after"),
    (EVENTS, {"after": "A" * 40}, "after"),
    (EVENTS, {"after": "_" * 22}, "after"),  # 22 characters that decode to 16 bytes but this one has 17 bits more
    (EVENTS, {"limit": "0"}, "limit"),
    (EVENTS, {"limit": "1001"}, "limit"),
    (EVENTS, {"limit": "ten"}, "limit"),
    (EVENTS, {"type": "user.nope"}, "type"),
    (EVENTS, {"type": "user.created\x00"}, "type"),
    (EVENTS, {"subject": "user:"}, "subject"),
    (EVENTS, {"subject": "user:a\x00b"}, "subject"),
    (f"{EVENTS}/stream", {"after": "bad"}, "after"),
    (AUDIT, {"actor": "USER"}, "actor"),
    (AUDIT, {"from": "yesterday"}, "from"),
    (AUDIT, {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    (AUDIT, {"limit": "201"}, "limit"),
    (AUDIT, {"offset": "-1"}, "offset"),
]
"""(path, query, the parameter the 400 must name)."""


async def test_bad_parameters_are_400s(client: Client, admin: LoggedIn) -> None:
    for path, params, field in BAD_PARAMETERS:
        response = await client.get(path, params=params, headers=admin.headers)
        assert response.status_code == 400, (params, response.text)
        assert field in response.json()["detail"] + str(response.json().get("errors")), (params, response.text)
    response = await client.get(f"{EVENTS}/stream", headers=admin.headers | {"Last-Event-ID": "x"})
    assert response.status_code == 400, response.text


async def test_the_purge_deletes_events_past_the_retention(database_url: str) -> None:
    for age in (400, 10):
        await sql(
            database_url,
            "INSERT INTO events (type, occurred_at, subject_type, subject_id, actor_type)"
            " VALUES ('user.deleted', now() - $1::interval, 'user', 'x', 'system')",
            timedelta(days=age),
        )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        assert await AuditTrail(pool).purge(365) == 1
        assert [row["n"] for row in await sql(database_url, "SELECT count(*) AS n FROM events")] == [1]
    finally:
        await pool.close()
