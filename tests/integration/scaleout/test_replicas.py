"""Read replicas (DATABASE_REPLICA_URLS) against a real streaming replica.

To tell which server answered, the replica's replay is paused: a write then reaches only the primary,
so an answer without it came from the replica, and an answer with it from the primary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.integration.scaleout.support import Replication, fetchval, log_in, sign_up
from tests.server import free_port

Client = AsyncTestClient[Litestar]

ME = "/api/v1/users/me"


@pytest.fixture(scope="module")
def replicated_settings(replication: Replication, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=replication.primary,
        database_replica_urls=replication.replica,
        data_dir=str(tmp_path_factory.mktemp("replicas")),
        log_format="json",
    )


@pytest.fixture(scope="module")
async def client(replicated_settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(replicated_settings), raise_server_exceptions=False) as client:
        yield client


async def sign_up_admin(client: Client, replication: Replication) -> dict[str, str]:
    signed_up = await sign_up(client)
    await fetchval(replication.primary, "UPDATE users SET is_superuser = true WHERE id = $1", signed_up.user["id"])
    headers, _ = await log_in(client, signed_up.user["email"])  # a new token, with the admin claim
    return headers


async def test_user_reads_come_from_the_replica_and_writes_answer_from_the_primary(
    client: Client, replication: Replication
) -> None:
    signed_up = await sign_up(client)
    email, me = signed_up.user["email"], signed_up.headers
    admin = await sign_up_admin(client, replication)
    await replication.caught_up()
    before = (await client.get(ME, headers=me)).json()

    async with replication.paused():
        changed = await client.patch(ME, headers=me, json={"full_name": "Ada Lovelace"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["full_name"] == "Ada Lovelace"
        assert changed.json()["version"] > before["version"]

        # The replica has not replayed the change: the reads show the user as it was.
        assert (await client.get(ME, headers=me)).json() == before
        page = await client.get("/api/v1/users", params={"email": email}, headers=admin)
        assert page.status_code == 200, page.text
        assert page.json()["items"] == [before]

        # An empty PATCH answers from the primary: the new ETag matches there (a replica would say 412).
        echoed = await client.patch(ME, headers={**me, "If-Match": changed.headers["etag"]}, json={})
        assert echoed.status_code == 200, echoed.text
        assert echoed.json() == changed.json()

    assert (await client.get(ME, headers=me)).json() == changed.json()


async def test_sign_up_log_in_and_reset_work_while_the_replica_lags(client: Client, replication: Replication) -> None:
    async with replication.paused():
        signed_up = await sign_up(client)  # the session's read-back after the insert, and the login, use the primary
        email, me = signed_up.user["email"], signed_up.headers

        assert await fetchval(replication.replica, "SELECT count(*) FROM users WHERE email = $1", email) == 0
        # The replica misses the new user, so the read falls back to the primary: no 404 for a user just made.
        mine = await client.get(ME, headers=me)
        assert mine.status_code == 200, mine.text
        assert mine.json() == signed_up.user

        # The reset's one statement writes though it reads like a query: it must run on the primary.
        reset = await client.post("/api/v1/auth/password-reset", json={"email": email})
        assert reset.status_code == 202, reset.text
        resets = "SELECT count(*) FROM outbox_messages WHERE recipient = $1 AND kind = 'password_reset'"
        assert await fetchval(replication.primary, resets, email) == 1


async def test_session_reads_come_from_the_replica_until_the_session_writes(
    client: Client, replication: Replication
) -> None:
    admin = await sign_up_admin(client, replication)
    async with replication.paused():
        created = await client.post("/api/v1/api-keys", headers=admin, json={"name": "new", "scopes": ["users:read"]})
        assert created.status_code == 201, created.text  # the session reads the new row back from the primary
        key_id = created.json()["id"]

        listed = await client.get("/api/v1/api-keys", headers=admin)
        assert listed.status_code == 200, listed.text
        assert key_id not in {key["id"] for key in listed.json()["items"]}, "a plain read goes to the replica"

        revoked = await client.delete(f"/api/v1/api-keys/{key_id}", headers=admin)
        assert revoked.status_code == 204, "the revocation finds the new key on the primary"

    listed = await client.get("/api/v1/api-keys", headers=admin)
    (key,) = [key for key in listed.json()["items"] if key["id"] == key_id]
    assert key["revoked_at"] is not None


async def test_reads_take_the_replicas_in_turn(replicated_settings: Settings, replication: Replication) -> None:
    # The primary listed as a second "replica": while replay is paused, every other read sees the change.
    replicas = f"{replication.replica}, {replication.primary}"
    settings = msgspec.structs.replace(replicated_settings, database_replica_urls=replicas)
    async with AsyncTestClient(create_app(settings), raise_server_exceptions=False) as client:
        me = (await sign_up(client)).headers
        async with replication.paused():
            changed = await client.patch(ME, headers=me, json={"bio": "changed"})
            assert changed.status_code == 200, changed.text
            bios = [(await client.get(ME, headers=me)).json()["bio"] for _ in range(6)]
    assert bios == [None, "changed"] * 3


async def test_readiness_checks_the_primary_only(replicated_settings: Settings) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    settings = msgspec.structs.replace(replicated_settings, database_replica_urls=unreachable)
    async with AsyncTestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert (await client.get("/health/ready")).status_code == 200
        me = (await sign_up(client)).headers
        assert (await client.get(ME, headers=me)).status_code == 503, "the user read went to the dead replica"
