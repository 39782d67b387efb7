"""Webhook endpoints: made, read, changed, rotated and deleted by admins, each change an event; bad and unsafe URLs
refused before anything is kept."""

from __future__ import annotations

import base64
import ipaddress
import json

import pytest

from accounts.webhooks import urls
from tests.integration.auth.support import Client, LoggedIn, assert_unauthenticated, insert_user, log_in, sql
from tests.integration.webhooks.support import WEBHOOKS
from tests.problems import assert_problem

PUBLIC_URL = "https://93.184.215.14/hooks"
"""A public address literal: accepted without a DNS lookup."""


async def test_an_admin_makes_reads_changes_rotates_and_deletes_a_webhook_each_an_event(
    client: Client, admin: LoggedIn, database_url: str
) -> None:
    body = {"url": PUBLIC_URL + "?token=abc", "event_types": ["user.*", "client.created"], "description": "CRM"}
    created = await client.post(WEBHOOKS, json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    webhook = created.json()
    secret = webhook["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created.headers["location"] == f"{WEBHOOKS}/{webhook['id']}"
    assert (webhook["enabled"], webhook["created_by"], webhook["event_types"]) == (True, admin.id, body["event_types"])

    read = await client.get(created.headers["location"], headers=admin.headers)
    assert read.status_code == 200
    assert "secret" not in read.json()
    listed = await client.get(WEBHOOKS, headers=admin.headers)
    assert [item["id"] for item in listed.json()["items"]] == [webhook["id"]]
    assert "secret" not in listed.json()["items"][0]

    patched = await client.patch(
        created.headers["location"], json={"description": "CRM sync", "enabled": False}, headers=admin.headers
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["description"], patched.json()["enabled"]) == ("CRM sync", False)

    rotated = await client.post(f"{created.headers['location']}/rotate-secret", json={}, headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret
    assert rotated.json()["previous_secret_expires_at"] is not None

    deleted = await client.delete(created.headers["location"], headers=admin.headers)
    assert deleted.status_code == 204
    assert (await client.get(created.headers["location"], headers=admin.headers)).status_code == 404

    events = await sql(
        database_url,
        "SELECT type, subject_id, actor_type, actor_id, data::text AS data FROM events"
        " WHERE subject_type = 'webhook' ORDER BY xid, seq",
    )
    assert [row["type"] for row in events] == [
        "webhook.created",
        "webhook.updated",
        "webhook.secret_rotated",
        "webhook.deleted",
    ]
    assert {(row["subject_id"], row["actor_type"], row["actor_id"]) for row in events} == {
        (webhook["id"], "user", admin.id)
    }
    assert json.loads(events[0]["data"]) == {"url": PUBLIC_URL, "event_types": body["event_types"]}  # no query
    assert json.loads(events[1]["data"]) == {"changes": {"description": "CRM sync", "enabled": False}}
    assert not any(part in row["data"] for row in events for part in (secret, rotated.json()["secret"]))


async def test_only_admins_manage_webhooks(
    client: Client, database_url: str, password_hash: str, service_key: str
) -> None:
    member = await log_in(client, await insert_user(database_url, password_hash, "member"))
    body = {"url": PUBLIC_URL, "event_types": ["*"]}
    assert_problem(await client.post(WEBHOOKS, json=body, headers=member.headers), 403)
    assert_problem(await client.get(WEBHOOKS, headers={"X-API-Key": service_key}), 403)
    assert_unauthenticated(await client.get(WEBHOOKS), error=None)
    assert await sql(database_url, "SELECT id FROM webhooks") == []


BAD_BODIES: list[tuple[dict[str, object], str]] = [
    ({"url": PUBLIC_URL, "event_types": []}, "event_types"),
    ({"url": PUBLIC_URL, "event_types": ["nothing.*"]}, "event_types[0]"),
    ({"url": PUBLIC_URL, "event_types": ["user.created", "login.failed"]}, "event_types[1]"),  # audit-only
    ({"url": PUBLIC_URL, "event_types": ["User.Created"]}, "event_types[0]"),
    ({"url": PUBLIC_URL, "event_types": "user.created"}, "event_types"),
    ({"url": PUBLIC_URL, "event_types": ["*"] * 51}, "event_types"),
    ({"url": PUBLIC_URL, "event_types": ["*"], "description": "a\u0000b"}, "description"),
    ({"url": PUBLIC_URL, "event_types": ["*"], "description": "x" * 501}, "description"),
    ({"url": PUBLIC_URL, "event_types": ["*"], "secret": "mine"}, "secret"),
    ({"url": 7, "event_types": ["*"]}, "url"),
    ({"url": "https://" + "a" * 2000 + ".com/", "event_types": ["*"]}, "url"),
    ({"url": "https://hooks.example.com/a b", "event_types": ["*"]}, "url"),
    ({"url": "https://hooks.example.com/\u0000", "event_types": ["*"]}, "url"),
    ({"url": "https://hooks.example.com:99999/", "event_types": ["*"]}, "url"),
    ({"url": "https://[::1/", "event_types": ["*"]}, "url"),
    ({"url": "https:///path-only", "event_types": ["*"]}, "url"),
    ({"url": "https://hooks.example.com/#frag", "event_types": ["*"]}, "url"),
    ({"url": "https://no-such-host.invalid/", "event_types": ["*"]}, "url"),
    ({"event_types": ["*"]}, "url"),
]
"""Bodies refused with a 400 naming the field."""


async def test_a_bad_webhook_is_refused_and_nothing_is_kept(client: Client, admin: LoggedIn, database_url: str) -> None:
    for body, field in BAD_BODIES:
        assert_problem(await client.post(WEBHOOKS, json=body, headers=admin.headers), 400, field=field)
    assert await sql(database_url, "SELECT id FROM webhooks") == []


async def test_hostile_bodies_and_ids_are_400s(client: Client, admin: LoggedIn) -> None:
    headers = {**admin.headers, "Content-Type": "application/json"}
    assert_problem(await client.post(WEBHOOKS, content=b'{"url": "\xff\xfe"}', headers=headers), 400)
    assert_problem(await client.post(WEBHOOKS, content=b"[1, 2", headers=headers), 400)
    assert_problem(await client.get(f"{WEBHOOKS}/not-a-uuid", headers=admin.headers), 400)
    assert_problem(await client.get(f"{WEBHOOKS}/{'0' * 8}-0000-7000-8000-{'0' * 12}", headers=admin.headers), 404)
    assert_problem(
        await client.get(f"{WEBHOOKS}/{'0' * 8}-0000-7000-8000-{'0' * 12}/deliveries", headers=admin.headers), 404
    )
    created = await client.post(WEBHOOKS, json={"url": PUBLIC_URL, "event_types": ["*"]}, headers=admin.headers)
    location = created.headers["location"]
    assert_problem(await client.patch(location, json={"enabled": "yes"}, headers=admin.headers), 400, field="enabled")
    assert_problem(
        await client.patch(location, json={"url": "ftp://x.example"}, headers=admin.headers), 400, field="url"
    )
    assert_problem(await client.get(f"{location}/deliveries?limit=0", headers=admin.headers), 400)
    assert_problem(await client.get(f"{location}/deliveries?status=lost", headers=admin.headers), 400)
    assert_problem(
        await client.post(f"{location}/rotate-secret", json={"overlap_seconds": -1}, headers=admin.headers), 400
    )
    missing = f"{location}/deliveries/{'0' * 8}-0000-7000-8000-{'0' * 12}/redeliver"
    assert_problem(await client.post(missing, headers=admin.headers), 404)


INSIDE_URLS = [
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://10.0.0.5/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://localhost:8000/hook",
    "ftp://hooks.example.com/",
    "file:///etc/passwd",
    "gopher://hooks.example.com/",
    "https://user:pass@93.184.215.14/hooks",
    "https://token@93.184.215.14/hooks",
]
"""URLs refused unless WEBHOOK_ALLOW_PRIVATE_URLS: they lead to the host itself, its network, cloud metadata,
or are not http(s) without credentials."""


async def test_urls_that_lead_inside_are_refused_when_private_urls_are_not_allowed(
    client: Client, admin: LoggedIn, database_url: str
) -> None:
    for url in INSIDE_URLS:
        refused = await client.post(WEBHOOKS, json={"url": url, "event_types": ["*"]}, headers=admin.headers)
        assert_problem(refused, 400, field="url")
    assert await sql(database_url, "SELECT id FROM webhooks") == []


async def test_an_update_to_a_url_that_leads_inside_is_refused(client: Client, admin: LoggedIn) -> None:
    created = await client.post(WEBHOOKS, json={"url": PUBLIC_URL, "event_types": ["*"]}, headers=admin.headers)
    location = created.headers["location"]
    refused = await client.patch(location, json={"url": "http://169.254.169.254/"}, headers=admin.headers)
    assert_problem(refused, 400, field="url")
    assert (await client.get(location, headers=admin.headers)).json()["url"] == PUBLIC_URL


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("64:ff9b::7f00:1", True),
        ("2002:a00:1::", True),
        ("169.254.169.254", True),
        ("fd00:ec2::254", True),
        ("0.0.0.0", True),  # noqa: S104 - an address to judge, not to bind
        ("255.255.255.255", True),
        ("198.18.0.1", True),
        ("ff02::1", True),
    ],
)
def test_the_address_check(address: str, refused: bool) -> None:
    assert (urls.refusal(ipaddress.ip_address(address)) is not None) is refused


async def test_private_urls_are_allowed_when_the_setting_says_so(hook_client: Client, hook_admin: LoggedIn) -> None:
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["user.created"]}
    assert (await hook_client.post(WEBHOOKS, json=body, headers=hook_admin.headers)).status_code == 201
