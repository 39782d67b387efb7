"""MessagePack next to JSON: request bodies by Content-Type, responses and problems by Accept.

Every MessagePack answer is compared with the JSON answer for the same resource, and every rejected
write is checked by reading the data back.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest

from accounts.auth.schemas import ApiKeyCreated, ApiKeyRead, TokenPair
from accounts.core.passwords import hash_password
from accounts.system.schemas import Health
from accounts.users.schemas import UserPage, UserRead
from tests.factories import UserCreateFactory
from tests.integration.auth.support import (
    API_KEYS,
    LOGOUT,
    ME,
    MY_PASSWORD,
    PASSWORD,
    REFRESH,
    REGISTER,
    TOKEN,
    USERS,
    Client,
    LoggedIn,
    bearer,
    insert_user,
    log_in,
    request_token,
)
from tests.problems import assert_problem

JSON = "application/json"
MSGPACK = "application/msgpack"
MSGPACK_TYPES = [MSGPACK, "application/x-msgpack", "application/vnd.msgpack"]
PROBLEM_MSGPACK = "application/problem+msgpack"
LIVE = "/health/live"

_serial = itertools.count(1)


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="session")
async def hashed_password() -> str:
    return await hash_password(PASSWORD)


@pytest.fixture
def svc(service_key: str) -> dict[str, str]:
    """The headers of a service holding `users:read` and `users:write`."""
    return {"X-API-Key": service_key}


@pytest.fixture
async def member(client: Client, database_url: str, hashed_password: str) -> LoggedIn:
    account = await insert_user(database_url, hashed_password, f"member{next(_serial):05d}")
    return await log_in(client, account)


@pytest.fixture
async def admin(client: Client, database_url: str, hashed_password: str) -> LoggedIn:
    account = await insert_user(database_url, hashed_password, f"admin{next(_serial):05d}", admin=True)
    return await log_in(client, account)


def pack(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


def unpack(response: httpx.Response) -> Any:
    """The MessagePack body of `response`, which must say it is MessagePack."""
    assert response.headers["content-type"].startswith(MSGPACK), response.headers
    return msgspec.msgpack.decode(response.content)


def msgpack_body(content_type: str = MSGPACK, **headers: str) -> dict[str, str]:
    return {"Content-Type": content_type, **headers}


def body(**overrides: Any) -> dict[str, Any]:
    return msgspec.to_builtins(UserCreateFactory.build(**overrides))


def assert_vary_accept(response: httpx.Response) -> None:
    vary = [part.strip().lower() for part in response.headers.get("vary", "").split(",")]
    assert "accept" in vary, response.headers


def assert_msgpack_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """`response` is an RFC 9457 problem of `status` in MessagePack."""
    assert response.status_code == status, response.content
    assert response.headers["content-type"].startswith(PROBLEM_MSGPACK), response.headers
    problem: dict[str, Any] = msgspec.msgpack.decode(response.content)
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["type"]
    return problem


async def create(client: Client, svc: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post(USERS, json=body(**overrides), headers=svc)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def read(client: Client, svc: dict[str, str], user_id: str) -> dict[str, Any]:
    response = await client.get(f"{USERS}/{user_id}", headers=svc)
    assert response.status_code == 200, response.text
    user: dict[str, Any] = response.json()
    return user


async def user_count(client: Client, svc: dict[str, str]) -> int:
    response = await client.get(USERS, headers=svc)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def same_user(msgpack_response: httpx.Response, json_user: dict[str, Any]) -> None:
    """The MessagePack body is the user of the JSON body: same fields, same values once typed."""
    raw = unpack(msgpack_response)
    assert set(raw) == set(json_user)
    typed = msgspec.msgpack.decode(msgpack_response.content, type=UserRead)
    assert typed == msgspec.convert(json_user, UserRead)
    assert str(typed.id) == json_user["id"]


# --- request bodies in MessagePack --------------------------------------------------------------


@pytest.mark.parametrize("content_type", MSGPACK_TYPES)
async def test_create_user_from_msgpack(client: Client, svc: dict[str, str], content_type: str) -> None:
    sent = body(email="Mixed.Case@Example.com", full_name="Ada Lovelace", bio="Line one\nline two")
    response = await client.post(USERS, content=pack(sent), headers=svc | msgpack_body(content_type))

    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith(JSON)  # no Accept: the answer is JSON
    user = response.json()
    assert user["email"] == "mixed.case@example.com"
    assert user["username"] == sent["username"]
    assert user["full_name"] == "Ada Lovelace"
    assert user["bio"] == "Line one\nline two"
    assert user["is_active"] is True
    assert response.headers["location"] == f"{USERS}/{user['id']}"
    assert response.headers["etag"] == '"1"'
    assert await read(client, svc, user["id"]) == user


async def test_create_user_answers_in_msgpack_when_asked(client: Client, svc: dict[str, str]) -> None:
    response = await client.post(USERS, content=pack(body()), headers=svc | msgpack_body(Accept=MSGPACK))

    assert response.status_code == 201, response.content
    created = unpack(response)
    assert_vary_accept(response)
    assert response.headers["location"] == f"{USERS}/{created['id']}"
    assert response.headers["etag"] == f'"{created["version"]}"'
    same_user(response, await read(client, svc, created["id"]))


async def test_json_body_with_a_msgpack_answer(client: Client, svc: dict[str, str]) -> None:
    response = await client.post(USERS, json=body(), headers=svc | {"Accept": MSGPACK})
    assert response.status_code == 201
    same_user(response, await read(client, svc, unpack(response)["id"]))


async def test_patch_user_from_msgpack(client: Client, svc: dict[str, str]) -> None:
    user = await create(client, svc, full_name="Before", bio="Kept")
    url = f"{USERS}/{user['id']}"
    response = await client.patch(
        url, content=pack({"full_name": "After", "is_active": False}), headers=svc | msgpack_body(Accept=MSGPACK)
    )

    assert response.status_code == 200, response.content
    updated = unpack(response)
    assert updated["full_name"] == "After"
    assert updated["is_active"] is False
    assert updated["bio"] == "Kept"
    assert updated["version"] == 2
    assert response.headers["etag"] == '"2"'
    same_user(response, await read(client, svc, user["id"]))


async def test_patch_user_null_from_msgpack_clears_a_field(client: Client, svc: dict[str, str]) -> None:
    user = await create(client, svc, full_name="Name", bio="Bio")
    response = await client.patch(
        f"{USERS}/{user['id']}", content=pack({"bio": None}), headers=svc | msgpack_body("application/x-msgpack")
    )
    assert response.status_code == 200, response.text
    assert response.json()["bio"] is None
    assert response.json()["full_name"] == "Name"
    assert (await read(client, svc, user["id"]))["bio"] is None


async def test_patch_me_from_msgpack(client: Client, svc: dict[str, str], member: LoggedIn) -> None:
    response = await client.patch(
        ME,
        content=pack({"full_name": "Me Myself", "bio": "About me"}),
        headers=member.headers | msgpack_body("application/vnd.msgpack", Accept=MSGPACK),
    )

    assert response.status_code == 200, response.content
    mine = unpack(response)
    assert mine["id"] == member.id
    assert mine["full_name"] == "Me Myself"
    assert mine["bio"] == "About me"
    as_json = await client.get(ME, headers=member.headers)
    assert as_json.json()["full_name"] == "Me Myself"
    same_user(response, as_json.json())
    as_msgpack = await client.get(ME, headers=member.headers | {"Accept": MSGPACK})
    assert as_msgpack.content == response.content


async def test_patch_me_from_msgpack_cannot_change_flags(client: Client, svc: dict[str, str], member: LoggedIn) -> None:
    before = await read(client, svc, member.id)
    response = await client.patch(
        ME, content=pack({"is_superuser": True}), headers=member.headers | msgpack_body(Accept=MSGPACK)
    )
    problem = assert_msgpack_problem(response, 400)
    assert "is_superuser" in [error["field"] for error in problem["errors"]]
    assert await read(client, svc, member.id) == before


async def test_register_from_msgpack(client: Client, svc: dict[str, str]) -> None:
    sent = {"email": "Signed.Up@example.com", "username": "signedup", "password": "a long passphrase"}
    response = await client.post(REGISTER, content=pack(sent), headers=msgpack_body(Accept=MSGPACK))

    assert response.status_code == 201, response.content
    user = unpack(response)
    assert user["email"] == "signed.up@example.com"
    assert user["username"] == "signedup"
    assert user["is_superuser"] is False
    assert "password" not in user
    assert response.headers["location"] == f"{USERS}/{user['id']}"
    same_user(response, await read(client, svc, user["id"]))
    assert (await request_token(client, "signedup", "a long passphrase")).status_code == 200


async def test_refresh_from_msgpack(client: Client, member: LoggedIn) -> None:
    response = await client.post(
        REFRESH, content=pack({"refresh_token": member.refresh_token}), headers=msgpack_body(Accept=MSGPACK)
    )

    assert response.status_code == 200, response.content
    pair = msgspec.msgpack.decode(response.content, type=TokenPair)
    assert set(unpack(response)) == set(TokenPair.__struct_fields__)
    assert pair.token_type == "Bearer"
    assert pair.refresh_token != member.refresh_token
    assert response.headers["cache-control"] == "no-store"
    assert (await client.get(ME, headers=bearer(pair.access_token))).json()["id"] == member.id

    as_json = await client.post(REFRESH, json={"refresh_token": pair.refresh_token})
    assert as_json.status_code == 200
    assert set(as_json.json()) == set(TokenPair.__struct_fields__)
    spent = await client.post(
        REFRESH, content=pack({"refresh_token": member.refresh_token}), headers=msgpack_body(Accept=MSGPACK)
    )
    assert_msgpack_problem(spent, 401)


async def test_log_out_from_msgpack(client: Client, member: LoggedIn) -> None:
    response = await client.post(LOGOUT, content=pack({"refresh_token": member.refresh_token}), headers=msgpack_body())
    assert response.status_code == 204, response.text
    assert_problem(await client.post(REFRESH, json={"refresh_token": member.refresh_token}), 401)


async def test_change_password_from_msgpack(client: Client, member: LoggedIn) -> None:
    sent = {"current_password": PASSWORD, "new_password": "the next passphrase"}
    response = await client.post(MY_PASSWORD, content=pack(sent), headers=member.headers | msgpack_body())
    assert response.status_code == 204, response.text
    assert (await request_token(client, member.account.username, "the next passphrase")).status_code == 200


async def test_create_api_key_from_msgpack(client: Client, admin: LoggedIn) -> None:
    expires = "2099-01-01T00:00:00+02:00"
    sent = {"name": "billing", "scopes": ["users:read"], "expires_at": expires}
    response = await client.post(API_KEYS, content=pack(sent), headers=admin.headers | msgpack_body(Accept=MSGPACK))

    assert response.status_code == 201, response.content
    created = msgspec.msgpack.decode(response.content, type=ApiKeyCreated)
    assert set(unpack(response)) == set(ApiKeyCreated.__struct_fields__)
    assert created.name == "billing"
    assert created.scopes == ["users:read"]
    assert created.expires_at == datetime(2098, 12, 31, 22, tzinfo=UTC)
    assert created.created_by == uuid.UUID(admin.id)
    assert response.headers["location"] == f"{API_KEYS}/{created.id}"
    listed = (await client.get(API_KEYS, headers=admin.headers)).json()["items"]
    (as_json,) = [key for key in listed if key["id"] == str(created.id)]
    shown = {name: getattr(created, name) for name in ApiKeyRead.__struct_fields__}
    assert msgspec.convert(as_json, ApiKeyRead) == ApiKeyRead(**shown)
    assert (await client.get(USERS, headers={"X-API-Key": created.key})).status_code == 200


async def test_create_api_key_takes_a_msgpack_timestamp(client: Client, admin: LoggedIn) -> None:
    """MessagePack has its own timestamp type; an aware one is as good as an RFC 3339 string."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    sent = {"name": "timestamped", "scopes": ["users:write"], "expires_at": expires}
    response = await client.post(API_KEYS, content=pack(sent), headers=admin.headers | msgpack_body())
    assert response.status_code == 201, response.text
    assert datetime.fromisoformat(response.json()["expires_at"]) == expires


async def test_create_api_key_in_msgpack_rejects_an_expiry_in_the_past(client: Client, admin: LoggedIn) -> None:
    sent = {"name": "late", "scopes": ["users:read"], "expires_at": "2000-01-01T00:00:00Z"}
    response = await client.post(API_KEYS, content=pack(sent), headers=admin.headers | msgpack_body(Accept=MSGPACK))
    problem = assert_msgpack_problem(response, 400)
    assert [error["field"] for error in problem["errors"]] == ["expires_at"]
    assert (await client.get(API_KEYS, headers=admin.headers)).json()["items"] == []


async def test_the_password_grant_takes_no_msgpack(client: Client, member: LoggedIn) -> None:
    """The token endpoint reads OAuth 2.0 form bodies only; its RFC 6749 error comes as MessagePack when asked."""
    grant = {"grant_type": "password", "username": member.account.username, "password": PASSWORD}
    response = await client.post(TOKEN, content=pack(grant), headers=msgpack_body(Accept=MSGPACK))
    assert response.status_code == 415
    assert response.headers["content-type"].startswith(MSGPACK)
    assert msgspec.msgpack.decode(response.content)["error"] == "invalid_request"


async def test_the_password_grant_answers_in_msgpack_when_asked(client: Client, member: LoggedIn) -> None:
    """The token endpoint's answer follows Accept like any other, says so (Vary), and is never cached."""
    grant = {"grant_type": "password", "username": member.account.username, "password": PASSWORD}
    response = await client.post(TOKEN, data=grant, headers={"Accept": MSGPACK})

    assert response.status_code == 200, response.content
    assert response.headers["content-type"] == MSGPACK
    assert response.headers["vary"] == "Accept"
    assert (response.headers["cache-control"], response.headers["pragma"]) == ("no-store", "no-cache")
    pair = msgspec.msgpack.decode(response.content, type=TokenPair)
    assert (await client.get(ME, headers=bearer(pair.access_token))).json()["id"] == member.id
    as_json = await client.post(TOKEN, data=grant)
    assert as_json.headers["content-type"] == JSON
    assert set(as_json.json()) == set(TokenPair.__struct_fields__)


# --- Accept -------------------------------------------------------------------------------------

WANTS_MSGPACK = [
    "application/msgpack",
    "application/x-msgpack",
    "application/vnd.msgpack",
    "application/json;q=0.9, application/msgpack",
    "application/json; q=0.5, application/msgpack; q=0.6",
    "text/html, application/msgpack;q=0.5",
    "application/*;q=0.5, application/msgpack",
    "*/*;q=0.1, application/msgpack",
]
WANTS_JSON = [
    None,
    "*/*",
    "application/*",
    "application/json",
    "application/msgpack;q=0.1, application/json",
    "application/msgpack;q=0.5, */*",
    "application/msgpack;q=0, */*",
    "application/msgpack;q=0",
    "text/html",
]


@pytest.mark.parametrize("accept", WANTS_MSGPACK)
async def test_accept_preferring_msgpack_gets_msgpack(client: Client, svc: dict[str, str], accept: str) -> None:
    user = await create(client, svc)
    one = await client.get(f"{USERS}/{user['id']}", headers=svc | {"Accept": accept})
    page = await client.get(USERS, headers=svc | {"Accept": accept})

    assert one.status_code == page.status_code == 200
    same_user(one, user)
    assert_vary_accept(one)
    assert msgspec.msgpack.decode(page.content, type=UserPage) == msgspec.convert(
        (await client.get(USERS, headers=svc)).json(), UserPage
    )
    assert unpack(page)["total"] == 1
    assert_vary_accept(page)


@pytest.mark.parametrize("accept", WANTS_JSON)
async def test_accept_not_preferring_msgpack_gets_json(client: Client, svc: dict[str, str], accept: str | None) -> None:
    user = await create(client, svc)
    headers = svc | ({"Accept": accept} if accept is not None else {})
    one = await client.get(f"{USERS}/{user['id']}", headers=headers)
    page = await client.get(USERS, headers=headers)

    assert one.status_code == page.status_code == 200
    assert one.headers["content-type"].startswith(JSON)
    assert one.json() == user
    assert page.headers["content-type"].startswith(JSON)
    assert page.json()["items"] == [user]
    assert_vary_accept(one)
    assert_vary_accept(page)


async def test_jwks_and_readiness_follow_accept(client: Client) -> None:
    jwks = await client.get("/.well-known/jwks.json", headers={"Accept": MSGPACK})
    assert jwks.status_code == 200
    assert unpack(jwks) == (await client.get("/.well-known/jwks.json")).json()
    assert_vary_accept(jwks)  # publicly cacheable: a shared cache must key it by Accept
    ready = await client.get("/health/ready", headers={"Accept": MSGPACK})
    assert ready.status_code == 200
    assert unpack(ready) == {"status": "ok"}


# --- /health/live -------------------------------------------------------------------------------


async def test_liveness_in_json(client: Client) -> None:
    for headers in ({}, {"Accept": JSON}, {"Accept": "*/*"}, {"Accept": "application/msgpack;q=0.2, */*"}):
        response = await client.get(LIVE, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(JSON)
        assert response.json() == {"status": "ok"}
        assert_vary_accept(response)


@pytest.mark.parametrize("accept", WANTS_MSGPACK)
async def test_liveness_in_msgpack(client: Client, accept: str) -> None:
    response = await client.get(LIVE, headers={"Accept": accept})
    assert response.status_code == 200
    assert unpack(response) == {"status": "ok"}
    assert msgspec.msgpack.decode(response.content, type=Health) == Health(status="ok")
    assert_vary_accept(response)


# --- validation errors: the same problem in both media types ------------------------------------

INVALID_CREATES = {
    "missing field": ({"username": "nomail"}, "email"),
    "unknown field": ({"email": "ok@example.com", "username": "abc", "role": "admin"}, "role"),
    "wrong type": ({"email": 42, "username": "abc"}, "email"),
    "wrong type in a list": ({"email": "ok@example.com", "username": "abc", "bio": ["x"]}, "bio"),
    "too long": ({"email": "ok@example.com", "username": "a" * 33}, "username"),
    "too long bio": ({"email": "ok@example.com", "username": "abc", "bio": "b" * 2001}, "bio"),
    "bad pattern": ({"email": "not-an-email", "username": "abc"}, "email"),
    "read-only field": ({"email": "ok@example.com", "username": "abc", "is_superuser": True}, "is_superuser"),
}


@pytest.mark.parametrize(("payload", "field"), INVALID_CREATES.values(), ids=INVALID_CREATES.keys())
async def test_create_validation_problem_is_the_same_from_msgpack(
    client: Client, svc: dict[str, str], payload: dict[str, Any], field: str
) -> None:
    from_json = await client.post(USERS, json=payload, headers=svc)
    from_msgpack = await client.post(USERS, content=pack(payload), headers=svc | msgpack_body())
    in_msgpack = await client.post(USERS, content=pack(payload), headers=svc | msgpack_body(Accept=MSGPACK))

    problem = assert_problem(from_json, 400, field=field)
    assert problem["type"] == "/problems/validation-failed"
    assert assert_problem(from_msgpack, 400, field=field) == problem
    assert assert_msgpack_problem(in_msgpack, 400) == problem
    assert await user_count(client, svc) == 0


INVALID_PATCHES = {
    "unknown field": ({"full_name": "ok", "password": "sneaky"}, "password"),
    "wrong type": ({"is_active": "yes"}, "is_active"),
    "null for a required column": ({"email": None}, "email"),
    "too long": ({"full_name": "x" * 201}, "full_name"),
    "control character": ({"full_name": "two\nlines"}, "full_name"),
}


@pytest.mark.parametrize(("payload", "field"), INVALID_PATCHES.values(), ids=INVALID_PATCHES.keys())
async def test_patch_validation_problem_is_the_same_from_msgpack(
    client: Client, svc: dict[str, str], payload: dict[str, Any], field: str
) -> None:
    user = await create(client, svc)
    url = f"{USERS}/{user['id']}"
    from_json = await client.patch(url, json=payload, headers=svc)
    from_msgpack = await client.patch(url, content=pack(payload), headers=svc | msgpack_body(Accept=MSGPACK))

    problem = assert_problem(from_json, 400, field=field)
    assert assert_msgpack_problem(from_msgpack, 400) == problem
    assert await read(client, svc, user["id"]) == user


async def test_msgpack_binary_is_not_a_string(client: Client, svc: dict[str, str]) -> None:
    """MessagePack tells bytes from text: a `bin` e-mail is the wrong type, as a number would be in JSON."""
    response = await client.post(
        USERS, content=pack({"email": b"bin@example.com", "username": "binary"}), headers=svc | msgpack_body()
    )
    assert_problem(response, 400, field="email")
    assert await user_count(client, svc) == 0


# --- problems in MessagePack --------------------------------------------------------------------


async def test_401_in_msgpack(client: Client) -> None:
    response = await client.get(USERS, headers={"Accept": MSGPACK})
    problem = assert_msgpack_problem(response, 401)
    assert problem["type"] == "/problems/unauthenticated"
    assert response.headers["www-authenticate"].startswith('Bearer realm="accounts"')
    assert_vary_accept(response)
    assert problem == (await client.get(USERS)).json()


async def test_403_in_msgpack(client: Client, svc: dict[str, str], member: LoggedIn) -> None:
    response = await client.get(USERS, headers=member.headers | {"Accept": MSGPACK})
    assert assert_msgpack_problem(response, 403) == (await client.get(USERS, headers=member.headers)).json()

    other = await create(client, svc)
    patch = await client.patch(
        f"{USERS}/{other['id']}",
        content=pack({"bio": "mine now"}),
        headers=member.headers | msgpack_body(Accept=MSGPACK),
    )
    assert_msgpack_problem(patch, 403)
    assert await read(client, svc, other["id"]) == other


async def test_404_in_msgpack(client: Client, svc: dict[str, str]) -> None:
    url = f"{USERS}/{uuid.uuid4()}"
    problem = assert_msgpack_problem(await client.get(url, headers=svc | {"Accept": MSGPACK}), 404)
    assert problem["type"] == "/problems/not-found"
    assert problem == (await client.get(url, headers=svc)).json()
    assert_msgpack_problem(await client.get("/api/v1/nothing-here", headers={"Accept": MSGPACK}), 404)


async def test_405_in_msgpack(client: Client, svc: dict[str, str]) -> None:
    response = await client.put(USERS, content=pack({}), headers=svc | msgpack_body(Accept=MSGPACK))
    assert_msgpack_problem(response, 405)
    assert "POST" in response.headers["allow"]


async def test_409_in_msgpack(client: Client, svc: dict[str, str]) -> None:
    taken = await create(client, svc)
    response = await client.post(
        USERS, content=pack(body(email=taken["email"].upper())), headers=svc | msgpack_body(Accept=MSGPACK)
    )
    problem = assert_msgpack_problem(response, 409)
    assert problem["errors"] == [{"field": "email", "message": "already taken"}]
    assert await user_count(client, svc) == 1


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "application/x-www-form-urlencoded", "application/msgpackx", "msgpack", None],
)
async def test_415_in_msgpack(client: Client, svc: dict[str, str], content_type: str | None) -> None:
    headers = svc | {"Accept": MSGPACK} | ({"Content-Type": content_type} if content_type else {})
    response = await client.post(USERS, content=pack(body()), headers=headers)
    problem = assert_msgpack_problem(response, 415)
    assert MSGPACK in problem["detail"]
    assert await user_count(client, svc) == 0


async def test_413_in_msgpack(client: Client, svc: dict[str, str]) -> None:
    huge = pack(body() | {"pad": "p" * (3 << 20)})
    response = await client.post(USERS, content=huge, headers=svc | msgpack_body(Accept=MSGPACK))
    assert_msgpack_problem(response, 413)
    assert await user_count(client, svc) == 0


async def test_problems_stay_json_without_a_msgpack_accept(client: Client, svc: dict[str, str]) -> None:
    response = await client.post(USERS, content=pack({"username": "nomail"}), headers=svc | msgpack_body())
    assert_problem(response, 400, field="email")
    assert_vary_accept(response)


# --- malformed MessagePack: 400, never 500, nothing written -------------------------------------

_VALID = pack({"email": "valid@example.com", "username": "valid"})
MALFORMED = {
    "empty": b"",
    "truncated": _VALID[:-3],
    "truncated header": b"\x82",
    "invalid opcode": b"\xc1",
    "invalid opcode inside": b"\x81\xa5email\xc1",
    "trailing bytes": _VALID + b"\x00",
    "nil": b"\xc0",
    "array at top level": pack([_VALID]),
    "string at top level": pack("email"),
    "integer at top level": pack(7),
    "binary at top level": pack(_VALID),
    "integer key": b"\x81\x01\xa1x",
    "binary key": b"\x81\xc4\x05email\xa1x",
    "array key": b"\x81\x91\x01\xa1x",
    "map key": b"\x81\x80\xa1x",
    "extension at top level": b"\xd4\x05\x00",
    "extension value": b"\x82\xa5email\xd4\x05\x00\xa8username\xa5valid",
    "timestamp at top level": pack(datetime(2026, 1, 1, tzinfo=UTC)),
    "JSON sent as msgpack": msgspec.json.encode({"email": "valid@example.com", "username": "valid"}),
    "nested arrays 10k deep": b"\x91" * 10_000 + b"\xc0",
    "nested maps 10k deep": b"\x81\xa1a" * 10_000 + b"\xc0",
    "nested 2k deep in a field": b"\x83\xa5email\xb1valid@example.com\xa8username\xa5valid\xa3bio"
    + b"\x91" * 2_000
    + b"\xc0",
    "huge declared length": b"\xdb\xff\xff\xff\xff",
    "huge declared map": b"\xdf\xff\xff\xff\xff",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_msgpack_create_is_400_and_writes_nothing(
    client: Client, svc: dict[str, str], raw: bytes
) -> None:
    response = await client.post(USERS, content=raw, headers=svc | msgpack_body())
    assert_problem(response, 400)
    in_msgpack = await client.post(USERS, content=raw, headers=svc | msgpack_body(Accept=MSGPACK))
    assert_msgpack_problem(in_msgpack, 400)
    assert await user_count(client, svc) == 0


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_msgpack_patch_is_400_and_changes_nothing(
    client: Client, svc: dict[str, str], raw: bytes
) -> None:
    user = await create(client, svc)
    response = await client.patch(
        f"{USERS}/{user['id']}", content=raw, headers=svc | msgpack_body("application/x-msgpack")
    )
    assert_problem(response, 400)
    assert await read(client, svc, user["id"]) == user


@pytest.mark.parametrize(
    "raw",
    [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000],
    ids=["arrays", "objects"],
)
async def test_deeply_nested_json_is_400_too(client: Client, svc: dict[str, str], raw: bytes) -> None:
    """The JSON twin of the nesting case: the decoder's RecursionError must not become a 500 either."""
    response = await client.post(USERS, content=raw, headers=svc | {"Content-Type": JSON})
    assert_problem(response, 400)
    assert await user_count(client, svc) == 0


@pytest.mark.parametrize(
    "raw", [MALFORMED["truncated"], MALFORMED["invalid opcode"], MALFORMED["nested arrays 10k deep"]]
)
async def test_malformed_msgpack_register_and_refresh_are_400(client: Client, svc: dict[str, str], raw: bytes) -> None:
    assert_problem(await client.post(REGISTER, content=raw, headers=msgpack_body()), 400)
    assert_problem(await client.post(REFRESH, content=raw, headers=msgpack_body()), 400)
    assert await user_count(client, svc) == 0


@pytest.mark.parametrize("raw", [MALFORMED["truncated"], MALFORMED["nested maps 10k deep"], MALFORMED["integer key"]])
async def test_malformed_msgpack_api_key_is_400(client: Client, admin: LoggedIn, raw: bytes) -> None:
    response = await client.post(API_KEYS, content=raw, headers=admin.headers | msgpack_body())
    assert_problem(response, 400)
    assert (await client.get(API_KEYS, headers=admin.headers)).json()["items"] == []


async def test_malformed_msgpack_names_the_problem(client: Client, svc: dict[str, str]) -> None:
    problem = assert_problem(
        await client.post(USERS, content=MALFORMED["truncated"], headers=svc | msgpack_body()), 400
    )
    assert problem["type"] == "/problems/malformed-request"
    assert "MessagePack" in problem["detail"]
