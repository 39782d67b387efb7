"""/api/v1/users through HTTP against the real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.factories import UserCreateFactory
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]
USERS = "/api/v1/users"


@pytest.fixture(autouse=True)
def as_service(client: Client, service_key: str) -> Iterator[None]:
    """These tests call as a service holding `users:read` and `users:write`; who may do what is tested
    in tests/integration/auth."""
    client.headers["X-API-Key"] = service_key
    yield
    del client.headers["X-API-Key"]


def body(**overrides: Any) -> dict[str, Any]:
    return msgspec.to_builtins(UserCreateFactory.build(**overrides))


async def create(client: Client, **overrides: Any) -> dict[str, Any]:
    response = await client.post(USERS, json=body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


# --- create -------------------------------------------------------------------------------------


async def test_create_returns_201_with_location_and_no_password(client: Client) -> None:
    sent = body(email="Ada.Lovelace@Example.COM", username="ada")
    response = await client.post(USERS, json=sent)

    assert response.status_code == 201
    user = response.json()
    assert response.headers["location"] == f"{USERS}/{user['id']}"
    assert uuid.UUID(user["id"]).version == 7
    assert user["email"] == "ada.lovelace@example.com"
    assert user["username"] == "ada"
    assert user["full_name"] == sent["full_name"]
    assert user["is_active"] is True
    assert user["is_superuser"] is False
    assert user["created_at"].endswith("Z")
    assert "hashed_password" not in user
    assert "password" not in response.text
    assert (await client.get(response.headers["location"])).json() == user


async def test_create_with_only_required_fields(client: Client) -> None:
    response = await client.post(USERS, json={"email": "min@example.com", "username": "min"})
    assert response.status_code == 201
    assert response.json()["full_name"] is None
    assert response.json()["bio"] is None


async def test_same_email_in_another_case_is_a_conflict(client: Client) -> None:
    await create(client, email="grace@example.com")
    response = await client.post(USERS, json=body(email="GRACE@Example.com"))
    assert_problem(response, 409, field="email")
    assert (await client.get(USERS)).json()["total"] == 1


async def test_duplicate_username_is_a_conflict(client: Client) -> None:
    await create(client, username="grace")
    assert_problem(await client.post(USERS, json=body(username="grace")), 409, field="username")


async def test_concurrent_creates_with_one_email_give_one_201(client: Client, live_url: str, service_key: str) -> None:
    bodies = [body(email="race@example.com") for _ in range(20)]
    async with httpx.AsyncClient(base_url=live_url, timeout=30, headers={"X-API-Key": service_key}) as live:
        responses = await asyncio.gather(*(live.post(USERS, json=b) for b in bodies))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19
    page = (await client.get(USERS, params={"email": "race@example.com"})).json()
    assert page["total"] == 1
    assert (await client.get(USERS)).json()["total"] == 1  # the failed inserts left the counts alone


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "nomail"}, "email"),
        ({"email": "no-user@example.com"}, "username"),
        ({"email": "not-an-email", "username": "abc"}, "email"),
        ({"email": "a@b", "username": "abc"}, "email"),
        ({"email": "a b@example.com", "username": "abc"}, "email"),
        ({"email": "x@example.com\n", "username": "abc"}, "email"),
        ({"email": "x" * 250 + "@example.com", "username": "abc"}, "email"),
        ({"email": 42, "username": "abc"}, "email"),
        ({"email": "ok@example.com", "username": "ab"}, "username"),
        ({"email": "ok@example.com", "username": "a" * 33}, "username"),
        ({"email": "ok@example.com", "username": "Upper"}, "username"),
        ({"email": "ok@example.com", "username": "spa ce"}, "username"),
        ({"email": "ok@example.com", "username": "abc\n"}, "username"),
        ({"email": "ok@example.com", "username": "abc", "full_name": "x" * 201}, "full_name"),
        ({"email": "ok@example.com", "username": "abc", "full_name": ""}, "full_name"),
        ({"email": "ok@example.com", "username": "abc", "full_name": "nul\u0000byte"}, "full_name"),
        ({"email": "ok@example.com", "username": "abc", "full_name": "two\nlines"}, "full_name"),
        ({"email": "ok@example.com", "username": "abc", "bio": "b" * 2001}, "bio"),
        ({"email": "ok@example.com", "username": "abc", "bio": "nul\u0000"}, "bio"),
        ({"email": "ok@example.com", "username": "abc", "bio": ["list"]}, "bio"),
        ({"email": "ok@example.com", "username": "abc", "is_superuser": True}, "is_superuser"),
        ({"email": "ok@example.com", "username": "abc", "unknown": 1}, "unknown"),
    ],
)
async def test_create_rejects_invalid_fields(client: Client, payload: dict[str, Any], field: str) -> None:
    problem = assert_problem(await client.post(USERS, json=payload), 400, field=field)
    assert problem["type"] == "/problems/validation-failed"
    assert (await client.get(USERS)).json()["total"] == 0


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"email": "a@example.com",', b"[]", b"null", b'"text"', b"\xff\xfe", b'{"email": 1e999}'],
)
async def test_create_rejects_malformed_json(client: Client, raw: bytes) -> None:
    response = await client.post(USERS, content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 400)
    assert (await client.get(USERS)).json()["total"] == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
async def test_create_rejects_other_content_types(client: Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(USERS, content=msgspec.json.encode(body()), headers=headers)
    assert_problem(response, 415)
    assert (await client.get(USERS)).json()["total"] == 0


async def test_create_accepts_json_with_charset(client: Client) -> None:
    response = await client.post(
        USERS, content=msgspec.json.encode(body()), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 201


async def test_body_over_the_size_limit_is_413(client: Client) -> None:
    huge = msgspec.json.encode(body(bio="x" * 1000)).replace(b"}", b', "pad": "' + b"p" * (2 << 20) + b'"}')
    response = await client.post(USERS, content=huge, headers={"content-type": "application/json"})
    assert_problem(response, 413)
    assert (await client.get(USERS)).json()["total"] == 0


# --- read ---------------------------------------------------------------------------------------


async def test_get_unknown_id_is_404(client: Client) -> None:
    problem = assert_problem(await client.get(f"{USERS}/{uuid.uuid4()}"), 404)
    assert problem["type"] == "/problems/not-found"


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "01a20618-8695-7496-8aaf-5112b8ded12", "%00"])
async def test_get_with_a_malformed_id_is_400(client: Client, bad_id: str) -> None:
    assert_problem(await client.get(f"{USERS}/{bad_id}"), 400, field="user_id")


# --- list ---------------------------------------------------------------------------------------


async def test_list_pages_have_exact_totals_and_no_overlap(client: Client) -> None:
    created = [await create(client) for _ in range(7)]

    seen: list[str] = []
    for offset in range(0, 9, 3):
        page = (await client.get(USERS, params={"limit": 3, "offset": offset, "sort": "created_at"})).json()
        assert page["total"] == 7
        assert page["limit"] == 3
        assert page["offset"] == offset
        seen += [user["id"] for user in page["items"]]
    assert seen == [user["id"] for user in created]

    past_the_end = (await client.get(USERS, params={"offset": 100})).json()
    assert past_the_end == {"items": [], "total": 7, "limit": 20, "offset": 100}


async def test_list_totals_stay_exact_through_deactivation_reactivation_and_delete(client: Client) -> None:
    """Unfiltered and is_active totals come from trigger-kept counts; they must follow every change."""
    users = [await create(client) for _ in range(4)]

    async def totals() -> tuple[int, int, int]:
        pages = [
            (await client.get(USERS, params=p)).json() for p in ({}, {"is_active": "true"}, {"is_active": "false"})
        ]
        return pages[0]["total"], pages[1]["total"], pages[2]["total"]

    assert await totals() == (4, 4, 0)
    await client.patch(f"{USERS}/{users[0]['id']}", json={"is_active": False})
    await client.patch(f"{USERS}/{users[1]['id']}", json={"is_active": False})
    await client.patch(f"{USERS}/{users[1]['id']}", json={"is_active": False})  # no change: no double count
    assert await totals() == (4, 2, 2)
    await client.patch(f"{USERS}/{users[1]['id']}", json={"is_active": True})
    await client.delete(f"{USERS}/{users[0]['id']}")
    await client.delete(f"{USERS}/{users[2]['id']}")
    assert await totals() == (2, 2, 0)


async def test_list_defaults_to_newest_first(client: Client) -> None:
    first, second = await create(client), await create(client)
    page = (await client.get(USERS)).json()
    assert [u["id"] for u in page["items"]] == [second["id"], first["id"]]
    assert page["limit"] == 20


@pytest.mark.parametrize("field", ["email", "username", "created_at"])
async def test_list_sorts_both_ways(client: Client, field: str) -> None:
    for name in ["carol", "alice", "bob"]:
        await create(client, username=name, email=f"{name}@example.com")
    ascending = [u[field] for u in (await client.get(USERS, params={"sort": field})).json()["items"]]
    descending = [u[field] for u in (await client.get(USERS, params={"sort": f"-{field}"})).json()["items"]]
    assert ascending == sorted(ascending)
    assert descending == ascending[::-1]


async def test_list_filters_by_is_active_and_email(client: Client) -> None:
    active = await create(client, email="on@example.com")
    inactive = await create(client, email="off@example.com")
    await client.patch(f"{USERS}/{inactive['id']}", json={"is_active": False})

    only_inactive = (await client.get(USERS, params={"is_active": "false"})).json()
    assert [u["id"] for u in only_inactive["items"]] == [inactive["id"]]
    assert only_inactive["total"] == 1
    by_email = (await client.get(USERS, params={"email": "ON@example.com"})).json()
    assert [u["id"] for u in by_email["items"]] == [active["id"]]


async def test_list_searches_by_prefix_of_email_username_or_full_name(client: Client) -> None:
    by_email = await create(client, email="zed@example.com", username="one", full_name="First")
    by_username = await create(client, email="a@example.com", username="zebra", full_name="Second")
    by_name = await create(client, email="b@example.com", username="three", full_name="Zelda Fitz")
    await create(client, email="c@example.com", username="four", full_name="Has Ze inside")

    found = (await client.get(USERS, params={"q": "ZE", "sort": "created_at"})).json()
    assert [u["id"] for u in found["items"]] == [by_email["id"], by_username["id"], by_name["id"]]
    assert found["total"] == 3


@pytest.mark.parametrize("wildcard", ["%", "_", "\\"])
async def test_list_search_treats_like_wildcards_literally(client: Client, wildcard: str) -> None:
    await create(client)
    found = (await client.get(USERS, params={"q": wildcard})).json()
    assert found["total"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"sort": "password"}, "sort"),
        ({"sort": "-"}, "sort"),
        ({"is_active": "maybe"}, "is_active"),
        ({"q": ""}, "q"),
        ({"q": "x" * 201}, "q"),
        ({"email": "x" * 255}, "email"),
    ],
)
async def test_list_rejects_bad_query_parameters(client: Client, params: dict[str, Any], field: str) -> None:
    assert_problem(await client.get(USERS, params=params), 400, field=field)


async def test_list_accepts_limit_bounds(client: Client) -> None:
    assert (await client.get(USERS, params={"limit": 1})).status_code == 200
    assert (await client.get(USERS, params={"limit": 200})).status_code == 200


# --- update -------------------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent(client: Client) -> None:
    user = await create(client, full_name="Before", bio="Bio")
    response = await client.patch(f"{USERS}/{user['id']}", json={"full_name": "After"})

    assert response.status_code == 200
    updated = response.json()
    assert updated["full_name"] == "After"
    assert updated["bio"] == "Bio"
    assert updated["email"] == user["email"]
    assert updated["updated_at"] > user["updated_at"]
    assert updated["created_at"] == user["created_at"]
    assert (await client.get(f"{USERS}/{user['id']}")).json() == updated


async def test_patch_null_clears_nullable_fields(client: Client) -> None:
    user = await create(client, full_name="Name", bio="Bio")
    updated = (await client.patch(f"{USERS}/{user['id']}", json={"full_name": None, "bio": None})).json()
    assert updated["full_name"] is None
    assert updated["bio"] is None


async def test_patch_lower_cases_email(client: Client) -> None:
    user = await create(client)
    updated = (await client.patch(f"{USERS}/{user['id']}", json={"email": "New@Example.com"})).json()
    assert updated["email"] == "new@example.com"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": None}, "email"),
        ({"username": None}, "username"),
        ({"is_active": None}, "is_active"),
        ({"is_active": "yes"}, "is_active"),
        ({"email": "bad"}, "email"),
        ({"username": "BAD"}, "username"),
        ({"bio": "x" * 2001}, "bio"),
        ({"full_name": "fine", "hashed_password": "x"}, "hashed_password"),
        ({"full_name": "fine", "id": str(uuid.uuid4())}, "id"),
    ],
)
async def test_patch_rejects_invalid_or_unknown_fields_and_changes_nothing(
    client: Client, payload: dict[str, Any], field: str
) -> None:
    user = await create(client)
    assert_problem(await client.patch(f"{USERS}/{user['id']}", json=payload), 400, field=field)
    assert (await client.get(f"{USERS}/{user['id']}")).json() == user


async def test_patch_granting_admin_by_a_service_key_is_403_and_changes_nothing(client: Client) -> None:
    user = await create(client)
    assert_problem(await client.patch(f"{USERS}/{user['id']}", json={"is_superuser": True}), 403)
    assert (await client.get(f"{USERS}/{user['id']}")).json() == user


async def test_patch_to_a_taken_email_or_username_is_409_and_changes_nothing(client: Client) -> None:
    taken = await create(client)
    user = await create(client)
    assert_problem(
        await client.patch(f"{USERS}/{user['id']}", json={"email": taken["email"].upper()}), 409, field="email"
    )
    assert_problem(
        await client.patch(f"{USERS}/{user['id']}", json={"username": taken["username"], "full_name": "New"}),
        409,
        field="username",
    )
    assert (await client.get(f"{USERS}/{user['id']}")).json() == user


async def test_patch_unknown_user_is_404(client: Client) -> None:
    assert_problem(await client.patch(f"{USERS}/{uuid.uuid4()}", json={"full_name": "x"}), 404)


async def test_patch_malformed_body_and_content_type(client: Client) -> None:
    user = await create(client)
    url = f"{USERS}/{user['id']}"
    assert_problem(await client.patch(url, content=b"{", headers={"content-type": "application/json"}), 400)
    assert_problem(await client.patch(url, content=b"full_name=x", headers={"content-type": "text/plain"}), 415)
    assert_problem(await client.patch(f"{USERS}/nope", json={"full_name": "x"}), 400, field="user_id")
    assert (await client.get(url)).json() == user


# --- delete -------------------------------------------------------------------------------------


async def test_delete_then_delete_again(client: Client) -> None:
    user = await create(client)
    first = await client.delete(f"{USERS}/{user['id']}")
    assert first.status_code == 204
    assert first.content == b""
    assert_problem(await client.delete(f"{USERS}/{user['id']}"), 404)
    assert_problem(await client.get(f"{USERS}/{user['id']}"), 404)


async def test_delete_with_a_malformed_id_is_400(client: Client) -> None:
    assert_problem(await client.delete(f"{USERS}/x"), 400, field="user_id")


# --- routing ------------------------------------------------------------------------------------


async def test_unknown_route_is_404_problem(client: Client) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404)


async def test_wrong_method_is_405_problem_with_allow(client: Client) -> None:
    response = await client.put(USERS, json={})
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]
