"""POST /api/v1/users/batch-get (batchGetUsers) through HTTP against the real database: many users by id and
e-mail in one read, who sees whom, and what the body may hold."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from uuid_utils.compat import uuid7

from accounts.users.repository import UserRepository
from accounts.users.schemas import BATCH_MAX
from tests.database import CreateDatabase, insert_api_key, migrate
from tests.integration.auth.support import PASSWORD, Account, assert_unauthenticated, insert_user, log_in, sql
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]
USERS = "/api/v1/users"
BATCH_GET = f"{USERS}/batch-get"
MSGPACK = "application/msgpack"
NOBODY_ID = "01936f3e-2a4b-7c3d-8e5f-a1b2c3d4e5f6"


async def create(client: Client, service_key: str, username: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        USERS,
        json={"email": f"{username}@example.com", "username": username, **fields},
        headers={"X-API-Key": service_key},
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def batch_get(client: Client, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(BATCH_GET, json=body, headers=headers)


def found(response: httpx.Response) -> list[str]:
    """The ids of the users a batch found, in the order it gave them."""
    assert response.status_code == 200, response.text
    return [user["id"] for user in response.json()["items"]]


@pytest.fixture
async def reader(database_url: str) -> dict[str, str]:
    """A service holding `users:read` only."""
    return {"X-API-Key": await insert_api_key(database_url, ["users:read"])}


@pytest.fixture
async def three(client: Client, service_key: str) -> list[dict[str, Any]]:
    return [await create(client, service_key, name) for name in ("ada", "brian", "cleo")]


# --- what comes back ------------------------------------------------------------------------------


async def test_ids_and_emails_mixed_come_back_in_request_order(
    client: Client, reader: dict[str, str], three: list[dict[str, Any]]
) -> None:
    ada, brian, cleo = three
    response = await batch_get(client, reader, ids=[cleo["id"], ada["id"]], emails=["brian@example.com"])

    assert found(response) == [cleo["id"], ada["id"], brian["id"]]
    assert response.json()["items"][0] == cleo  # each item is the user as getUser gives it
    assert response.json()["missing"] == {"ids": [], "emails": []}


async def test_duplicates_are_folded_at_their_first_mention(
    client: Client, reader: dict[str, str], three: list[dict[str, Any]]
) -> None:
    ada, brian, _ = three
    response = await batch_get(
        client,
        reader,
        ids=[brian["id"], ada["id"], brian["id"]],
        emails=[
            "ADA@example.com",
            "brian@example.com",
            "Brian@Example.com",
            "nobody@example.com",
            "NOBODY@example.com",
        ],
    )

    assert found(response) == [brian["id"], ada["id"]]
    assert response.json()["missing"] == {"ids": [], "emails": ["nobody@example.com"]}


async def test_missing_ids_and_emails_are_listed_once_in_request_order(
    client: Client, reader: dict[str, str], three: list[dict[str, Any]]
) -> None:
    ada = three[0]
    other = str(uuid.UUID(int=1))
    response = await batch_get(
        client,
        reader,
        ids=[NOBODY_ID, ada["id"], other, NOBODY_ID],
        emails=["Zed@Example.com", "ada@example.com", "yan@example.com"],
    )

    assert found(response) == [ada["id"]]
    assert response.json()["missing"] == {"ids": [NOBODY_ID, other], "emails": ["zed@example.com", "yan@example.com"]}


async def test_emails_match_in_any_case(client: Client, reader: dict[str, str], service_key: str) -> None:
    grace = await create(client, service_key, "grace", email="Grace.Hopper@Example.COM")

    response = await batch_get(client, reader, emails=["GRACE.HOPPER@example.com"])

    assert found(response) == [grace["id"]]
    assert response.json()["items"][0]["email"] == "grace.hopper@example.com"


async def test_nobody_found_is_a_200_with_everything_missing(client: Client, reader: dict[str, str]) -> None:
    response = await batch_get(client, reader, ids=[NOBODY_ID], emails=["nobody@example.com"])

    assert found(response) == []
    assert response.json()["missing"] == {"ids": [NOBODY_ID], "emails": ["nobody@example.com"]}


async def test_messagepack_body_and_answer(client: Client, reader: dict[str, str], three: list[dict[str, Any]]) -> None:
    ada, brian, _ = three
    response = await client.post(
        BATCH_GET,
        content=msgspec.msgpack.encode({"ids": [ada["id"], NOBODY_ID], "emails": ["BRIAN@example.com"]}),
        headers={**reader, "Content-Type": MSGPACK, "Accept": MSGPACK},
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(MSGPACK)
    answer = msgspec.msgpack.decode(response.content)
    assert answer == {"items": [ada, brian], "missing": {"ids": [NOBODY_ID], "emails": []}}


# --- how many -------------------------------------------------------------------------------------


async def insert_users(database_url: str, count: int) -> list[tuple[str, str]]:
    """`count` users in one statement: (id, e-mail) of each."""
    ids = [uuid7() for _ in range(count)]
    names = [f"bulk{n:04d}" for n in range(count)]
    await sql(
        database_url,
        "INSERT INTO users (id, email, username, is_active, is_superuser, created_at, updated_at)"
        " SELECT id, name || '@example.com', name, true, false, now(), now()"
        " FROM unnest($1::uuid[], $2::text[]) AS t(id, name)",
        ids,
        names,
    )
    return [(str(user_id), f"{name}@example.com") for user_id, name in zip(ids, names, strict=True)]


async def test_500_ids_and_emails_together_are_read(client: Client, database_url: str, reader: dict[str, str]) -> None:
    users = await insert_users(database_url, BATCH_MAX)
    by_id, by_email = users[:200], users[200:]

    response = await batch_get(
        client, reader, ids=[user_id for user_id, _ in by_id], emails=[email for _, email in by_email]
    )

    assert found(response) == [user_id for user_id, _ in users]
    assert response.json()["missing"] == {"ids": [], "emails": []}


@pytest.mark.parametrize(
    ("ids", "emails", "fields"),
    [
        pytest.param(BATCH_MAX + 1, 0, {"ids"}, id="501-ids"),
        pytest.param(0, BATCH_MAX + 1, {"emails"}, id="501-emails"),
        pytest.param(300, 201, {"ids", "emails"}, id="501-together"),
        pytest.param(0, 0, {"ids", "emails"}, id="none"),
    ],
)
async def test_more_than_500_or_none_is_a_400_naming_the_fields(
    client: Client, reader: dict[str, str], ids: int, emails: int, fields: set[str]
) -> None:
    body = {"ids": [NOBODY_ID] * ids, "emails": ["nobody@example.com"] * emails}

    problem = assert_problem(await client.post(BATCH_GET, json=body, headers=reader), 400)

    assert problem["type"] == "/problems/validation-failed"
    assert {error["field"] for error in problem["errors"]} == fields


# --- who sees whom --------------------------------------------------------------------------------


async def test_a_user_token_finds_only_its_own_user(
    client: Client, service_key: str, three: list[dict[str, Any]]
) -> None:
    me = await create(client, service_key, "myself", password=PASSWORD)
    token = await log_in(client, Account(id=me["id"], username="myself", email=me["email"]))
    ada = three[0]

    response = await batch_get(
        client,
        token.headers,
        ids=[ada["id"], me["id"], NOBODY_ID],
        emails=["brian@example.com", "MySelf@example.com", "nobody@example.com"],
    )

    assert found(response) == [me["id"]]
    # Others who exist are missing exactly as those who do not: nothing tells them apart.
    assert response.json()["missing"] == {
        "ids": [ada["id"], NOBODY_ID],
        "emails": ["brian@example.com", "nobody@example.com"],
    }


async def test_keys_with_users_read_find_everyone(
    client: Client, database_url: str, reader: dict[str, str], three: list[dict[str, Any]]
) -> None:
    admin = await insert_user(database_url, None, "root", admin=True)
    ids = [user["id"] for user in three]
    read_write = {"X-API-Key": await insert_api_key(database_url, ["users:read", "users:write"])}

    for headers in (reader, read_write):
        assert found(await batch_get(client, headers, ids=ids, emails=[admin.email])) == [*ids, admin.id]


async def test_an_admin_token_finds_everyone(
    client: Client, database_url: str, service_key: str, three: list[dict[str, Any]]
) -> None:
    root = await create(client, service_key, "root", password=PASSWORD)
    await sql(database_url, "UPDATE users SET is_superuser = true WHERE id = $1", uuid.UUID(root["id"]))
    token = await log_in(client, Account(id=root["id"], username="root", email=root["email"]))
    ids = [user["id"] for user in three]

    assert found(await batch_get(client, token.headers, ids=ids)) == ids


@pytest.mark.parametrize("scopes", [["users:write"], ["audit:read"]])
async def test_a_key_without_users_read_is_refused(
    client: Client, database_url: str, three: list[dict[str, Any]], scopes: list[str]
) -> None:
    headers = {"X-API-Key": await insert_api_key(database_url, scopes)}

    assert_problem(await batch_get(client, headers, ids=[three[0]["id"]]), 403)


async def test_without_credentials_it_is_a_401(client: Client, three: list[dict[str, Any]]) -> None:
    assert_unauthenticated(await batch_get(client, {}, ids=[three[0]["id"]]), error=None)


# --- what the body may hold -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"ids": ["not-a-uuid"]}, "ids[0]", id="invalid-uuid"),
        pytest.param({"ids": [NOBODY_ID, "01936f3e-2a4b-7c3d-8e5f"]}, "ids[1]", id="short-uuid"),
        pytest.param({"ids": [42]}, "ids[0]", id="number-for-uuid"),
        pytest.param({"emails": ["nul\u0000@example.com"]}, "emails[0]", id="nul-in-email"),
        pytest.param({"emails": ["ok@example.com", "not-an-email"]}, "emails[1]", id="not-an-email"),
        pytest.param({"emails": ["x" * 250 + "@example.com"]}, "emails[0]", id="overlong-email"),
        pytest.param({"ids": NOBODY_ID}, "ids", id="string-for-list"),
        pytest.param({"emails": {"a": "b"}}, "emails", id="object-for-list"),
        pytest.param({"ids": None}, "ids", id="null-for-list"),
        pytest.param({"ids": [NOBODY_ID], "names": ["ada"]}, "names", id="unknown-field"),
    ],
)
async def test_invalid_fields_are_a_400_naming_them(
    client: Client, reader: dict[str, str], body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await client.post(BATCH_GET, json=body, headers=reader), 400, field=field)
    assert problem["type"] == "/problems/validation-failed"


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"ids"', b"\xff\xfe", b'{"ids": ["ok\xff"]}'])
async def test_malformed_bodies_are_a_400(client: Client, reader: dict[str, str], raw: bytes) -> None:
    response = await client.post(BATCH_GET, content=raw, headers={**reader, "Content-Type": "application/json"})
    assert_problem(response, 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_other_content_types_are_a_415(client: Client, reader: dict[str, str], content_type: str | None) -> None:
    headers = {**reader, **({"Content-Type": content_type} if content_type else {})}
    response = await client.post(BATCH_GET, content=f'{{"ids": ["{NOBODY_ID}"]}}', headers=headers)
    assert_problem(response, 415)


# --- replicas -------------------------------------------------------------------------------------


@pytest.fixture
async def primary_and_replica(
    database_url: str, create_database: CreateDatabase
) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """The session database as the primary, and an empty database of its own standing for a replica that lags."""
    replica_url = await create_database()
    await migrate(replica_url)
    primary, replica = asyncpg.create_pool(database_url), asyncpg.create_pool(replica_url)
    async with primary, replica:
        yield primary, replica


async def test_what_a_replica_lacks_is_read_from_the_primary(
    database_url: str, primary_and_replica: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    primary, replica = primary_and_replica
    old = await insert_user(database_url, None, "old")
    await replica.execute(
        "INSERT INTO users (id, email, username, full_name, is_active, is_superuser, created_at, updated_at)"
        " VALUES ($1, $2, $3, 'As The Replica Has It', true, false, now(), now())",
        uuid.UUID(old.id),
        old.email,
        old.username,
    )
    new = await insert_user(database_url, None, "new")  # on the primary only, as if just created
    repository = UserRepository(primary, [replica])

    users = await repository.get_many([uuid.UUID(old.id), uuid.UUID(NOBODY_ID)], [new.email])

    assert {str(user.id): user.full_name for user in users} == {old.id: "As The Replica Has It", new.id: None}
