"""Deliveries to a real receiver that verifies each with the `standardwebhooks` library: every event exactly once
after de-duplication by `webhook-id`, each subject's in feed order, through a receiver outage, redirects not
followed, a run of failures disabling the endpoint, redelivery, and signatures by both secrets during a rotation.

Events are written with the events API (`record_on`) by concurrent writers, each in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

import asyncpg
import httpx
import msgspec

from accounts.config import Settings
from accounts.events.services import Subject, record_on
from accounts.webhooks.jobs import post
from tests.integration.auth.support import Client, LoggedIn, sql
from tests.integration.webhooks.conftest import MAX_FAILURES, RETRY_WINDOW
from tests.integration.webhooks.support import WEBHOOKS, Receiver, eventually

EVENTS_PER_SUBJECT = 12
SUBJECTS = 6


async def make_webhook(client: Client, admin: LoggedIn, receiver: Receiver, *types: str) -> dict[str, Any]:
    body = {"url": receiver.url, "event_types": list(types or ["user.*"])}
    created = await client.post(WEBHOOKS, json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    webhook: dict[str, Any] = created.json()
    receiver.secrets.append(webhook["secret"])
    return webhook


async def write_events(hook_database_url: str, subjects: list[str], per_subject: int) -> None:
    """`per_subject` user.updated events for each subject, written by one writer per subject at once (so the
    transactions of different subjects interleave and commit out of id order), each event its own transaction."""

    async def writer(user_id: str) -> None:
        connection = await asyncpg.connect(hook_database_url)
        try:
            for n in range(per_subject):
                async with connection.transaction():
                    await record_on(connection, "user.updated", Subject("user", user_id), {"changes": {"bio": str(n)}})
                    await asyncio.sleep(random.uniform(0, 0.01))  # held open a little, at random
        finally:
            await connection.close()

    await asyncio.gather(*(writer(subject) for subject in subjects))


async def feed_order(hook_database_url: str) -> dict[str, list[str]]:
    """Each subject's event ids in feed order."""
    rows = await sql(
        hook_database_url, "SELECT id, subject_id FROM events WHERE type = 'user.updated' ORDER BY xid, seq"
    )
    order: dict[str, list[str]] = {}
    for row in rows:
        order.setdefault(row["subject_id"], []).append(str(row["id"]))
    return order


def received_order(receiver: Receiver) -> dict[str, list[str]]:
    """Each subject's event ids in the order the receiver first got them."""
    order: dict[str, list[str]] = {}
    for item in receiver.unique().values():
        order.setdefault(item.event["subject"]["id"], []).append(item.webhook_id)
    return order


async def deliveries(client: Client, admin: LoggedIn, webhook_id: str, query: str = "") -> dict[str, Any]:
    response = await client.get(f"{WEBHOOKS}/{webhook_id}/deliveries?limit=200{query}", headers=admin.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_every_event_arrives_signed_once_in_order_per_subject(
    hook_client: Client, hook_admin: LoggedIn, worker: None, endpoint: Receiver, hook_database_url: str
) -> None:
    webhook = await make_webhook(hook_client, hook_admin, endpoint)
    subjects = [str(uuid.uuid4()) for _ in range(SUBJECTS)]
    await write_events(hook_database_url, subjects, EVENTS_PER_SUBJECT)
    total = SUBJECTS * EVENTS_PER_SUBJECT

    await eventually(lambda: len(endpoint.unique()) >= total, message=f"{len(endpoint.unique())} of {total}")

    assert endpoint.refused == 0  # every delivery verified by standardwebhooks
    expected = await feed_order(hook_database_url)
    assert received_order(endpoint) == expected
    first = next(iter(endpoint.unique().values()))
    assert set(first.event) == {"id", "type", "occurred_at", "subject", "actor", "request_id", "data"}
    assert first.event["id"] == first.webhook_id  # webhook-id is the event id, the same at every attempt
    assert first.event["type"] == "user.updated"
    log = await deliveries(hook_client, hook_admin, webhook["id"])
    assert log["total"] == total
    assert {item["status"] for item in log["items"]} == {"succeeded"}
    assert all(item["last_status_code"] == 204 and item["last_latency_ms"] is not None for item in log["items"])
    assert all(item["next_attempt_at"] is None and item["attempts"] == 1 for item in log["items"])
    # Only matching types: the webhook's own creation (webhook.created) was not sent to a `user.*` endpoint.
    assert {item.event["type"] for item in endpoint.received} == {"user.updated"}


async def test_a_receiver_that_goes_away_gets_everything_when_it_returns(
    hook_client: Client, hook_admin: LoggedIn, worker: None, endpoint: Receiver, hook_database_url: str
) -> None:
    webhook = await make_webhook(hook_client, hook_admin, endpoint)
    endpoint.stop()
    subjects = [str(uuid.uuid4()) for _ in range(3)]
    await write_events(hook_database_url, subjects, 4)

    async def attempted() -> bool:
        page = await deliveries(hook_client, hook_admin, webhook["id"], "&status=pending")
        return any(item["attempts"] >= 1 and item["last_error"] for item in page["items"])

    await eventually_async(attempted)
    page = await deliveries(hook_client, hook_admin, webhook["id"], "&status=pending")
    failing = next(item for item in page["items"] if item["attempts"] >= 1)
    assert failing["last_status_code"] is None
    assert failing["next_attempt_at"] is not None
    assert endpoint.unique() == {}

    endpoint.start()  # the same port
    await eventually(lambda: len(endpoint.unique()) >= 12, message=f"{len(endpoint.unique())} of 12")
    assert received_order(endpoint) == await feed_order(hook_database_url)
    assert endpoint.refused == 0


async def eventually_async(check: Any, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {within} s"
        await asyncio.sleep(0.1)


async def test_a_run_of_failures_disables_the_endpoint_until_it_is_enabled_again(
    hook_client: Client, hook_admin: LoggedIn, worker: None, endpoint: Receiver, hook_database_url: str
) -> None:
    endpoint.status = 500
    webhook = await make_webhook(hook_client, hook_admin, endpoint)
    await write_events(hook_database_url, [str(uuid.uuid4()) for _ in range(MAX_FAILURES)], 1)

    async def disabled() -> bool:
        read = await hook_client.get(f"{WEBHOOKS}/{webhook['id']}", headers=hook_admin.headers)
        return read.json()["enabled"] is False

    await eventually_async(disabled, within=RETRY_WINDOW * 4)
    read = (await hook_client.get(f"{WEBHOOKS}/{webhook['id']}", headers=hook_admin.headers)).json()
    assert read["disabled_at"] is not None
    assert read["consecutive_failures"] == MAX_FAILURES
    page = await deliveries(hook_client, hook_admin, webhook["id"])
    assert {item["status"] for item in page["items"]} == {"failed"}
    assert all(item["attempts"] >= 2 and item["last_status_code"] == 500 for item in page["items"])
    assert all(item["last_error"] == "HTTP 500: nope!" for item in page["items"])
    (disabled_event,) = await sql(
        hook_database_url, "SELECT actor_type, data::text AS data FROM events WHERE type = 'webhook.disabled'"
    )
    assert disabled_event["actor_type"] == "system"
    assert json.loads(disabled_event["data"]) == {"failures": MAX_FAILURES}

    # While disabled nothing is sent; enabled again, a redelivery arrives.
    endpoint.status = 204
    tried = endpoint.requests
    await write_events(hook_database_url, [str(uuid.uuid4())], 1)
    await asyncio.sleep(0.5)
    assert endpoint.requests == tried
    enabled = await hook_client.patch(f"{WEBHOOKS}/{webhook['id']}", json={"enabled": True}, headers=hook_admin.headers)
    assert (enabled.json()["enabled"], enabled.json()["consecutive_failures"]) == (True, 0)
    failed = page["items"][0]
    redelivered = await hook_client.post(
        f"{WEBHOOKS}/{webhook['id']}/deliveries/{failed['id']}/redeliver", headers=hook_admin.headers
    )
    assert redelivered.status_code == 202, redelivered.text
    assert redelivered.json()["status"] == "pending"
    await eventually(lambda: failed["event_id"] in endpoint.unique())


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    hook_client: Client, hook_admin: LoggedIn, worker: None, endpoint: Receiver, hook_database_url: str
) -> None:
    elsewhere = Receiver().start()
    try:
        endpoint.status, endpoint.location = 307, elsewhere.url
        webhook = await make_webhook(hook_client, hook_admin, endpoint)
        elsewhere.secrets = endpoint.secrets
        await write_events(hook_database_url, [str(uuid.uuid4())], 1)

        async def attempted() -> bool:
            page = await deliveries(hook_client, hook_admin, webhook["id"])
            return bool(page["items"]) and page["items"][0]["attempts"] >= 1

        await eventually_async(attempted)
        (item,) = (await deliveries(hook_client, hook_admin, webhook["id"]))["items"]
        assert item["last_status_code"] == 307
        assert "redirects are not followed" in item["last_error"]
        assert elsewhere.requests == 0
    finally:
        elsewhere.stop()


async def test_during_a_rotation_deliveries_verify_with_either_secret(
    hook_client: Client, hook_admin: LoggedIn, worker: None, endpoint: Receiver, hook_database_url: str
) -> None:
    webhook = await make_webhook(hook_client, hook_admin, endpoint)
    old_secret = endpoint.secrets[0]
    rotated = await hook_client.post(
        f"{WEBHOOKS}/{webhook['id']}/rotate-secret", json={"overlap_seconds": 600}, headers=hook_admin.headers
    )
    new_secret = rotated.json()["secret"]
    for secret in (new_secret, old_secret):  # a receiver that knows only one of them verifies
        endpoint.secrets = [secret]
        before = len(endpoint.received)
        await write_events(hook_database_url, [str(uuid.uuid4())], 1)
        await eventually(lambda before=before: len(endpoint.received) > before)
        assert endpoint.received[-1].signatures == 2
    assert endpoint.refused == 0

    await hook_client.post(
        f"{WEBHOOKS}/{webhook['id']}/rotate-secret", json={"overlap_seconds": 0}, headers=hook_admin.headers
    )
    endpoint.secrets = [old_secret]  # the secret two rotations ago signs nothing any more
    await write_events(hook_database_url, [str(uuid.uuid4())], 1)
    await eventually(lambda: endpoint.refused >= 1)


async def test_the_delivery_checks_the_url_again(hook_settings: Settings, endpoint: Receiver) -> None:
    """An endpoint saved while private URLs were allowed is refused at delivery once they are not."""
    strict = msgspec.structs.replace(hook_settings, webhook_allow_private_urls=False)
    delivery = {
        "url": endpoint.url,
        "payload": "{}",
        "event_id": uuid.uuid4(),
        "secret": b"k" * 32,
        "previous_secret": None,
        "overlapping": False,
    }
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        outcome = await post(client, strict, delivery)  # type: ignore[arg-type]
        assert not outcome.ok
        assert outcome.error is not None
        assert outcome.error.startswith("Refused: Webhooks may not point at 127.0.0.1")
        assert endpoint.requests == 0
        allowed = await post(client, hook_settings, delivery)  # type: ignore[arg-type]
        assert endpoint.requests == 1
        assert allowed.status_code == 401  # the receiver knows no secret here
