"""Idempotency-Key on the creating POSTs (createUser, register, createApiKey, createOAuthClient), through HTTP
against the real database.

Row counts are read with SQL, bypassing the service, to prove a replay did not do the work again.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from accounts.core.http.idempotency import Claim
from accounts.core.passwords import hash_password
from tests.database import insert_api_key
from tests.factories import UserCreateFactory
from tests.integration.auth.support import PASSWORD, LoggedIn, insert_user, log_in
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]

USERS = "/api/v1/users"
REGISTER = "/api/v1/auth/register"
API_KEYS = "/api/v1/api-keys"
MSGPACK = "application/msgpack"
REPLAYED = "idempotent-replayed"
REUSED = "/problems/idempotency-key-reused"
IDEMPOTENT_OPERATIONS = {
    "createUser",
    "register",
    "createApiKey",
    "createOAuthClient",
    "registerPasskey",
    "createWebhook",
}
DEFAULT_TTL = timedelta(seconds=86_400)


def body(**overrides: Any) -> dict[str, Any]:
    return msgspec.to_builtins(UserCreateFactory.build(**overrides))


def sign_up(**overrides: Any) -> dict[str, Any]:
    return {"email": "ada@example.com", "username": "ada", "password": "analytical engine"} | overrides


def new_key() -> str:
    return str(uuid.uuid4())


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return headers | {"Idempotency-Key": key}


async def fetch(database_url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetch(statement, *args)
    finally:
        await connection.close()


async def count(database_url: str, table: str) -> int:
    (row,) = await fetch(database_url, f"SELECT count(*) AS n FROM {table}")  # noqa: S608  # our own table names
    return int(row["n"])


def assert_same_response(first: httpx.Response, replay: httpx.Response) -> None:
    """`replay` repeats `first` byte for byte, with the replay mark that `first` does not carry."""
    assert REPLAYED not in first.headers
    assert replay.headers.get(REPLAYED) == "true"
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    for name in ("content-type", "location", "etag", "vary", "cache-control"):
        assert replay.headers.get(name) == first.headers.get(name), name
    assert replay.headers["content-length"] == str(len(first.content))
    assert replay.headers["x-request-id"] != first.headers["x-request-id"]  # the retry's own, not a stored one


@pytest.fixture
def svc(service_key: str) -> dict[str, str]:
    """The headers of a service holding `users:read` and `users:write`."""
    return {"X-API-Key": service_key}


@pytest.fixture
async def admin(client: Client, database_url: str) -> LoggedIn:
    account = await insert_user(database_url, await hash_password(PASSWORD), "root", admin=True)
    return await log_in(client, account)


# --- replay -------------------------------------------------------------------------------------


async def test_a_retry_replays_the_first_response_without_creating_again(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    key, sent = new_key(), body()

    first = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert first.status_code == 201, first.text
    user = first.json()
    assert first.headers["location"] == f"{USERS}/{user['id']}"
    assert first.headers["etag"]
    assert first.headers["content-type"].startswith("application/json")

    for _ in range(2):
        assert_same_response(first, await client.post(USERS, json=sent, headers=keyed(svc, key)))
    assert await count(database_url, "users") == 1
    (row,) = await fetch(database_url, "SELECT id FROM users")
    assert str(row["id"]) == user["id"]


async def test_the_stored_row_belongs_to_the_calling_key_and_expires_after_a_day(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    key = new_key()
    assert (await client.post(USERS, json=body(), headers=keyed(svc, key))).status_code == 201

    (api_key,) = await fetch(database_url, "SELECT id FROM api_keys")
    (row,) = await fetch(database_url, "SELECT * FROM idempotency_keys")
    caller = f"key:{api_key['id']}"
    assert row["caller"] == caller
    assert bytes(row["key_hash"]) == Claim(caller, key).key_hash
    assert key.encode() not in bytes(row["key_hash"]) + bytes(row["response"])
    assert Claim(caller, key).open(bytes(row["response"])).status == 201
    assert row["expires_at"] - row["created_at"] == DEFAULT_TTL


async def test_the_ttl_setting_sets_the_expiry(settings: Settings, service_key: str, database_url: str) -> None:
    short = msgspec.structs.replace(settings, idempotency_key_ttl=60)
    async with AsyncTestClient(create_app(short)) as app:
        response = await app.post(USERS, json=body(), headers={"X-API-Key": service_key, "Idempotency-Key": "k"})
        assert response.status_code == 201, response.text
    (row,) = await fetch(database_url, "SELECT created_at, expires_at FROM idempotency_keys")
    assert row["expires_at"] - row["created_at"] == timedelta(seconds=60)


async def test_without_the_header_two_posts_are_two_requests(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    sent = body()
    first = await client.post(USERS, json=sent, headers=svc)
    second = await client.post(USERS, json=sent, headers=svc)

    assert first.status_code == 201
    assert REPLAYED not in first.headers
    assert_problem(second, 409, field="email")
    assert REPLAYED not in second.headers
    assert await count(database_url, "users") == 1
    assert await count(database_url, "idempotency_keys") == 0


async def test_a_new_key_is_a_new_request(client: Client, svc: dict[str, str], database_url: str) -> None:
    sent = body()
    assert (await client.post(USERS, json=sent, headers=keyed(svc, new_key()))).status_code == 201
    second = await client.post(USERS, json=sent, headers=keyed(svc, new_key()))
    assert_problem(second, 409, field="email")
    assert REPLAYED not in second.headers
    assert await count(database_url, "users") == 1


# --- the same key for another request -----------------------------------------------------------


async def test_the_same_key_with_another_body_is_422_and_creates_nothing(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    key, sent = new_key(), body()
    first = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert first.status_code == 201

    reused = await client.post(USERS, json=body(), headers=keyed(svc, key))
    problem = assert_problem(reused, 422)
    assert problem["type"] == REUSED
    assert REPLAYED not in reused.headers
    assert await count(database_url, "users") == 1
    # The refusal left the stored response alone.
    assert_same_response(first, await client.post(USERS, json=sent, headers=keyed(svc, key)))


async def test_the_same_json_in_other_bytes_is_another_request(client: Client, svc: dict[str, str]) -> None:
    key, sent = new_key(), body()
    headers = keyed(svc, key) | {"Content-Type": "application/json"}
    assert (await client.post(USERS, content=msgspec.json.encode(sent), headers=headers)).status_code == 201

    spaced = msgspec.json.format(msgspec.json.encode(sent), indent=2)
    assert_problem(await client.post(USERS, content=spaced, headers=headers), 422)


async def test_the_same_key_and_body_on_another_path_is_422(client: Client, admin: LoggedIn, database_url: str) -> None:
    key, sent = new_key(), body()
    assert (await client.post(USERS, json=sent, headers=keyed(admin.headers, key))).status_code == 201

    other = await client.post(API_KEYS, json=sent, headers=keyed(admin.headers, key))
    assert assert_problem(other, 422)["type"] == REUSED
    assert await count(database_url, "api_keys") == 0


async def test_register_and_create_user_with_one_key_string_are_different_callers(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    key = new_key()
    assert (await client.post(REGISTER, json=sign_up(), headers={"Idempotency-Key": key})).status_code == 201
    created = await client.post(USERS, json=body(), headers=keyed(svc, key))
    assert created.status_code == 201, created.text
    assert REPLAYED not in created.headers
    assert await count(database_url, "users") == 2


# --- which responses are stored -----------------------------------------------------------------


async def test_a_validation_failure_is_stored_and_replayed(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    key, invalid = new_key(), body(username="ab")
    first = await client.post(USERS, json=invalid, headers=keyed(svc, key))
    assert_problem(first, 400, field="username")

    replay = await client.post(USERS, json=invalid, headers=keyed(svc, key))
    assert_problem(replay, 400, field="username")
    assert_same_response(first, replay)
    (row,) = await fetch(database_url, "SELECT caller, response FROM idempotency_keys")
    assert Claim(row["caller"], key).open(bytes(row["response"])).status == 400

    fixed = body(username="abc")
    assert_problem(await client.post(USERS, json=fixed, headers=keyed(svc, key)), 422)
    assert await count(database_url, "users") == 0
    created = await client.post(USERS, json=fixed, headers=keyed(svc, new_key()))
    assert created.status_code == 201, created.text
    assert REPLAYED not in created.headers
    assert await count(database_url, "users") == 1


async def test_a_conflict_is_not_stored_and_the_retry_runs_again(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    existing = await client.post(USERS, json=body(email="taken@example.com"), headers=svc)
    assert existing.status_code == 201
    key, sent = new_key(), body(email="taken@example.com")

    conflict = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert_problem(conflict, 409, field="email")
    assert await count(database_url, "idempotency_keys") == 0

    assert (await client.delete(existing.headers["location"], headers=svc)).status_code == 204
    retry = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert retry.status_code == 201, retry.text
    assert REPLAYED not in retry.headers
    assert retry.json()["id"] != existing.json()["id"]
    assert_same_response(retry, await client.post(USERS, json=sent, headers=keyed(svc, key)))
    assert await count(database_url, "users") == 1


async def test_a_forbidden_answer_is_replayed_to_the_same_caller(client: Client, database_url: str) -> None:
    reader = {"X-API-Key": await insert_api_key(database_url, ["users:read"]), "Idempotency-Key": "k"}
    sent = body()
    first = await client.post(USERS, json=sent, headers=reader)
    assert_problem(first, 403)
    assert_same_response(first, await client.post(USERS, json=sent, headers=reader))


async def test_an_unauthenticated_request_stores_nothing(client: Client, database_url: str) -> None:
    response = await client.post(USERS, json=body(), headers={"X-API-Key": "acck_nope", "Idempotency-Key": "k"})
    assert_problem(response, 401)
    assert await count(database_url, "idempotency_keys") == 0


async def test_routes_without_idempotency_ignore_the_header(client: Client, admin: LoggedIn, database_url: str) -> None:
    form = {"grant_type": "password", "username": admin.account.username, "password": PASSWORD}
    first = await client.post("/api/v1/auth/token", data=form, headers={"Idempotency-Key": "k"})
    second = await client.post("/api/v1/auth/token", data=form, headers={"Idempotency-Key": "k"})
    assert first.status_code == second.status_code == 200
    assert REPLAYED not in second.headers
    assert first.json()["refresh_token"] != second.json()["refresh_token"]
    assert await count(database_url, "idempotency_keys") == 0


# --- callers ------------------------------------------------------------------------------------


async def test_keys_belong_to_their_caller(client: Client, database_url: str) -> None:
    first_service = {"X-API-Key": await insert_api_key(database_url, ["users:read", "users:write"])}
    second_service = {"X-API-Key": await insert_api_key(database_url, ["users:read", "users:write"])}
    key, one, two = new_key(), body(), body()

    first = await client.post(USERS, json=one, headers=keyed(first_service, key))
    second = await client.post(USERS, json=two, headers=keyed(second_service, key))

    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert REPLAYED not in second.headers
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["email"] == two["email"]
    assert await count(database_url, "users") == 2
    callers = {row["caller"] for row in await fetch(database_url, "SELECT caller FROM idempotency_keys")}
    key_ids = {f"key:{row['id']}" for row in await fetch(database_url, "SELECT id FROM api_keys")}
    assert callers == key_ids
    # Each caller's retry replays its own response.
    assert_same_response(first, await client.post(USERS, json=one, headers=keyed(first_service, key)))
    assert_same_response(second, await client.post(USERS, json=two, headers=keyed(second_service, key)))


async def test_anonymous_register_replays_the_same_user(client: Client, database_url: str) -> None:
    key = new_key()
    first = await client.post(REGISTER, json=sign_up(), headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"{USERS}/{first.json()['id']}"

    replay = await client.post(REGISTER, json=sign_up(), headers={"Idempotency-Key": key})
    assert_same_response(first, replay)
    assert replay.json()["id"] == first.json()["id"]
    assert await count(database_url, "users") == 1
    (row,) = await fetch(database_url, "SELECT caller FROM idempotency_keys")
    assert row["caller"] == "anonymous"


async def test_create_api_key_replays_the_same_secret(client: Client, admin: LoggedIn, database_url: str) -> None:
    key, sent = new_key(), {"name": "billing", "scopes": ["users:read"]}
    first = await client.post(API_KEYS, json=sent, headers=keyed(admin.headers, key))
    assert first.status_code == 201, first.text
    created = first.json()

    replay = await client.post(API_KEYS, json=sent, headers=keyed(admin.headers, key))
    assert_same_response(first, replay)
    assert replay.json()["key"] == created["key"]
    assert replay.headers["location"] == f"{API_KEYS}/{created['id']}"
    (row,) = await fetch(database_url, "SELECT id FROM api_keys")
    assert str(row["id"]) == created["id"]
    (stored,) = await fetch(database_url, "SELECT caller FROM idempotency_keys")
    assert stored["caller"] == f"user:{admin.id}"
    assert (await client.get(USERS, headers={"X-API-Key": replay.json()["key"]})).status_code == 200


# --- what is kept at rest -----------------------------------------------------------------------


async def test_create_api_key_keeps_no_readable_secret(client: Client, admin: LoggedIn, database_url: str) -> None:
    """API key secrets are shown once and stored only as hashes; the stored replay must not undo that."""
    response = await client.post(
        API_KEYS, json={"name": "billing", "scopes": ["users:read"]}, headers=keyed(admin.headers, new_key())
    )
    assert response.status_code == 201, response.text
    secret = response.json()["key"]

    (row,) = await fetch(database_url, "SELECT * FROM idempotency_keys")
    at_rest = b"".join(bytes(value) for value in row.values() if isinstance(value, bytes))
    assert secret.encode() not in at_rest
    secret_part = secret.split("_", 2)[2]  # acck_<prefix>_<secret>; the secret itself may contain "_"
    assert len(secret_part) == 43
    assert secret_part.encode() not in at_rest


async def test_register_keeps_no_fast_hash_of_the_password(client: Client, database_url: str) -> None:
    """Passwords are kept only as argon2 hashes: a plain SHA-256 of the sign-up body would let whoever reads
    the table test password guesses at SHA-256 speed (the rest of the body is in the users row)."""
    sent = msgspec.json.encode(sign_up())
    headers = {"Idempotency-Key": new_key(), "Content-Type": "application/json"}
    assert (await client.post(REGISTER, content=sent, headers=headers)).status_code == 201

    (row,) = await fetch(database_url, "SELECT request_hash FROM idempotency_keys")
    guess = hashlib.sha256(f"POST\0{REGISTER}\0application/json\0".encode() + sent).digest()
    assert bytes(row["request_hash"]) != guess


# --- MessagePack --------------------------------------------------------------------------------


async def test_a_msgpack_response_is_replayed_byte_for_byte(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    key, sent = new_key(), msgspec.msgpack.encode(body())
    headers = keyed(svc, key) | {"Content-Type": MSGPACK, "Accept": MSGPACK}

    first = await client.post(USERS, content=sent, headers=headers)
    assert first.status_code == 201, first.content
    assert first.headers["content-type"].startswith(MSGPACK)
    user = msgspec.msgpack.decode(first.content)
    assert first.headers["location"] == f"{USERS}/{user['id']}"

    replay = await client.post(USERS, content=sent, headers=headers)
    assert_same_response(first, replay)
    assert replay.headers["content-type"].startswith(MSGPACK)
    assert await count(database_url, "users") == 1


# --- malformed keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"k" * 256,
        b"with space",
        b"tab\tinside",
        b"del\x7f",
        "café".encode(),
        b"latin-1 \xe9",
        b"key\n",
        b"k" * 255 + b"\n",
    ],
    ids=["empty", "256-chars", "space", "tab", "del", "utf-8", "latin-1", "newline", "255-chars-and-newline"],
)
async def test_a_malformed_key_is_400_and_creates_nothing(
    client: Client, svc: dict[str, str], database_url: str, value: bytes
) -> None:
    headers = [(b"X-API-Key", svc["X-API-Key"].encode()), (b"Idempotency-Key", value)]
    response = await client.post(USERS, json=body(), headers=headers)
    problem = assert_problem(response, 400)
    assert "Idempotency-Key" in problem["detail"]
    assert await count(database_url, "users") == 0
    assert await count(database_url, "idempotency_keys") == 0


async def test_a_body_over_the_size_limit_is_413_and_stores_nothing(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    oversized = msgspec.json.encode(body(bio="x" * (2 << 20)))
    headers = keyed(svc, new_key()) | {"Content-Type": "application/json"}
    assert_problem(await client.post(USERS, content=oversized, headers=headers), 413)
    assert await count(database_url, "idempotency_keys") == 0


async def test_a_malformed_key_on_register_is_400(client: Client, database_url: str) -> None:
    assert_problem(await client.post(REGISTER, json=sign_up(), headers={"Idempotency-Key": "a b"}), 400)
    assert await count(database_url, "users") == 0


async def test_a_key_of_255_visible_characters_is_accepted(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    key = ("!~" + "".join(chr(c) for c in range(0x21, 0x7F)) * 3)[:255]
    assert len(key) == 255
    sent = body()
    first = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert first.status_code == 201, first.text
    assert_same_response(first, await client.post(USERS, json=sent, headers=keyed(svc, key)))
    (row,) = await fetch(database_url, "SELECT caller, key_hash FROM idempotency_keys")
    assert bytes(row["key_hash"]) == Claim(row["caller"], key).key_hash


# --- expiry -------------------------------------------------------------------------------------


async def expire_keys(database_url: str) -> None:
    await fetch(database_url, "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")


async def test_an_expired_key_runs_the_request_again(client: Client, svc: dict[str, str], database_url: str) -> None:
    key, sent = new_key(), body()
    first = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert first.status_code == 201
    await expire_keys(database_url)
    await fetch(database_url, "DELETE FROM users")

    again = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert again.status_code == 201, again.text
    assert REPLAYED not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert await count(database_url, "users") == 1
    (row,) = await fetch(
        database_url, "SELECT expires_at, created_at, expires_at > now() AS live FROM idempotency_keys"
    )
    assert row["live"]
    assert row["expires_at"] - row["created_at"] == DEFAULT_TTL
    # The new response is the one replayed from now on.
    replay = await client.post(USERS, json=sent, headers=keyed(svc, key))
    assert_same_response(again, replay)


async def test_an_expired_key_may_carry_another_body(client: Client, svc: dict[str, str], database_url: str) -> None:
    key = new_key()
    assert (await client.post(USERS, json=body(), headers=keyed(svc, key))).status_code == 201
    await expire_keys(database_url)

    other = await client.post(USERS, json=body(), headers=keyed(svc, key))
    assert other.status_code == 201, other.text
    assert REPLAYED not in other.headers
    assert await count(database_url, "users") == 2


async def test_a_live_key_is_not_taken_over(client: Client, svc: dict[str, str], database_url: str) -> None:
    key = new_key()
    assert (await client.post(USERS, json=body(), headers=keyed(svc, key))).status_code == 201
    await fetch(database_url, "UPDATE idempotency_keys SET expires_at = now() + interval '1 minute'")
    assert_problem(await client.post(USERS, json=body(), headers=keyed(svc, key)), 422)
    assert await count(database_url, "users") == 1


# --- concurrency --------------------------------------------------------------------------------


async def test_concurrent_requests_with_one_key_create_once(live_url: str, service_key: str, database_url: str) -> None:
    key, sent = new_key(), body()
    headers = {"X-API-Key": service_key, "Idempotency-Key": key}
    async with httpx.AsyncClient(base_url=live_url, timeout=30, headers=headers) as live:
        responses = await asyncio.gather(*(live.post(USERS, json=sent) for _ in range(8)))

    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.content for r in responses}) == 1
    originals = [r for r in responses if REPLAYED not in r.headers]
    assert len(originals) == 1
    assert all(r.headers[REPLAYED] == "true" for r in responses if r is not originals[0])
    assert await count(database_url, "users") == 1
    assert await count(database_url, "idempotency_keys") == 1


async def test_concurrent_requests_with_one_key_and_different_bodies(
    live_url: str, service_key: str, database_url: str
) -> None:
    headers = {"X-API-Key": service_key, "Idempotency-Key": new_key()}
    async with httpx.AsyncClient(base_url=live_url, timeout=30, headers=headers) as live:
        responses = await asyncio.gather(*(live.post(USERS, json=body()) for _ in range(6)))

    assert sorted(r.status_code for r in responses) == [201] + [422] * 5, [r.text for r in responses]
    assert await count(database_url, "users") == 1


async def test_many_concurrent_retries_more_than_a_pool_holds(
    live_url: str, service_key: str, database_url: str
) -> None:
    headers = {"X-API-Key": service_key, "Idempotency-Key": new_key()}
    sent = body()
    async with httpx.AsyncClient(base_url=live_url, timeout=30, headers=headers) as live:
        responses = await asyncio.gather(*(live.post(USERS, json=sent) for _ in range(30)))

    assert [r.status_code for r in responses] == [201] * 30, [r.text for r in responses if r.status_code != 201]
    assert sum(REPLAYED not in r.headers for r in responses) == 1
    assert await count(database_url, "users") == 1


async def hold_key(database_url: str, caller: str, key: str) -> asyncpg.Connection:
    """A connection whose open transaction holds an uncommitted claim of `key`, as a running first request does."""
    connection = await asyncpg.connect(database_url)
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute(
        "INSERT INTO idempotency_keys (caller, key_hash, request_hash, expires_at)"
        " VALUES ($1, $2, $3, now() + interval '1 hour')",
        caller,
        Claim(caller, key).key_hash,
        b"\0" * 32,
    )
    return connection


async def test_a_retry_waits_for_a_running_first_and_runs_if_it_fails(
    live_url: str, svc: dict[str, str], database_url: str
) -> None:
    (api_key,) = await fetch(database_url, "SELECT id FROM api_keys")
    key = new_key()
    holder = await hold_key(database_url, f"key:{api_key['id']}", key)
    async with httpx.AsyncClient(base_url=live_url, timeout=30, headers=keyed(svc, key)) as live:
        try:
            retry = asyncio.create_task(live.post(USERS, json=body()))
            await asyncio.sleep(1)
            assert not retry.done()
            assert await count(database_url, "users") == 0
        finally:
            await holder.execute("ROLLBACK")
            await holder.close()
        response = await asyncio.wait_for(retry, 10)

    assert response.status_code == 201, response.text
    assert REPLAYED not in response.headers
    assert await count(database_url, "users") == 1


async def test_a_first_request_running_too_long_is_409_in_use(
    client: Client, svc: dict[str, str], database_url: str
) -> None:
    (api_key,) = await fetch(database_url, "SELECT id FROM api_keys")
    key = new_key()
    holder = await hold_key(database_url, f"key:{api_key['id']}", key)
    try:
        response = await client.post(USERS, json=body(), headers=keyed(svc, key))
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()

    problem = assert_problem(response, 409)
    assert problem["type"] == "/problems/idempotency-key-in-use"
    assert response.headers["retry-after"] == "1"
    assert await count(database_url, "users") == 0


# --- OpenAPI ------------------------------------------------------------------------------------


async def test_the_document_declares_the_header_on_exactly_the_idempotent_operations(client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    declared: dict[str, dict[str, Any]] = {}
    with_422: set[str] = set()
    for item in response.json()["paths"].values():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            for parameter in operation.get("parameters", []):
                if parameter["name"].lower() == "idempotency-key":
                    declared[operation["operationId"]] = parameter
                    assert method == "post"
            if "422" in operation["responses"]:
                with_422.add(operation["operationId"])
                assert "409" in operation["responses"]

    assert set(declared) == IDEMPOTENT_OPERATIONS
    assert with_422 == IDEMPOTENT_OPERATIONS
    for parameter in declared.values():
        assert parameter["name"] == "Idempotency-Key"
        assert parameter["in"] == "header"
        assert parameter.get("required", False) is False
        assert parameter["description"]
        assert parameter["schema"]["type"] == "string"
        assert parameter["schema"]["minLength"] == 1
        assert parameter["schema"]["maxLength"] == 255
        assert parameter["schema"]["pattern"]
