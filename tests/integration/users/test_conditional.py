"""Conditional requests on /api/v1/users: ETags from users.version, 304 for If-None-Match, 412 for If-Match.

Every rejected write is checked by reading the user back: same body, same ETag.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.factories import UserCreateFactory
from tests.integration.auth.support import LOGOUT_ALL, ME, MY_PASSWORD, USERS, Account, bearer, log_in
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]
PASSWORD = "correct horse battery staple"
MSGPACK = "application/msgpack"


@dataclass(frozen=True)
class Member:
    """A user made through the API with a password, and the bearer headers of their login."""

    user: dict[str, Any]
    headers: dict[str, str]

    @property
    def id(self) -> str:
        return str(self.user["id"])


@pytest.fixture
def svc(service_key: str) -> dict[str, str]:
    """The headers of a service holding `users:read` and `users:write`."""
    return {"X-API-Key": service_key}


@pytest.fixture
async def member(client: Client, svc: dict[str, str]) -> Member:
    user = await create(client, svc, password=PASSWORD)
    account = Account(id=user["id"], username=user["username"], email=user["email"], password=PASSWORD)
    return Member(user=user, headers=(await log_in(client, account)).headers)


def body(**overrides: Any) -> dict[str, Any]:
    return msgspec.to_builtins(UserCreateFactory.build(**overrides))


def tag(version: int) -> str:
    return f'"{version}"'


def version_of(response: httpx.Response) -> int:
    """The version an ETag names, checked against the body's `version` when there is a body."""
    etag = response.headers["etag"]
    assert etag.startswith('"'), etag
    assert etag.endswith('"'), etag
    version = int(etag[1:-1])
    if response.status_code == 200:
        assert response.json()["version"] == version
    return version


async def create(client: Client, svc: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post(USERS, json=body(**overrides), headers=svc)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def read(client: Client, svc: dict[str, str], user_id: str) -> httpx.Response:
    response = await client.get(f"{USERS}/{user_id}", headers=svc)
    assert response.status_code == 200, response.text
    return response


async def snapshot(client: Client, svc: dict[str, str], user_id: str) -> tuple[dict[str, Any], str]:
    """What a reader sees of the user: the body and the ETag."""
    response = await read(client, svc, user_id)
    return response.json(), response.headers["etag"]


async def bumped(client: Client, svc: dict[str, str], *, times: int = 1) -> dict[str, Any]:
    """A user whose version is 1 + `times` (each PATCH bumps it once)."""
    user = await create(client, svc)
    for n in range(times):
        response = await client.patch(f"{USERS}/{user['id']}", json={"bio": f"edit {n}"}, headers=svc)
        assert response.status_code == 200, response.text
    reread: dict[str, Any] = (await read(client, svc, user["id"])).json()
    assert reread["version"] == 1 + times
    return reread


# --- ETags on every answer that carries a user ----------------------------------------------------


async def test_create_answers_with_the_etag_of_version_1(client: Client, svc: dict[str, str]) -> None:
    response = await client.post(USERS, json=body(), headers=svc)
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == '"1"'
    assert response.json()["version"] == 1


async def test_get_answers_with_the_etag_and_vary_accept(client: Client, svc: dict[str, str]) -> None:
    user = await create(client, svc)
    response = await read(client, svc, user["id"])
    assert response.headers["etag"] == '"1"'
    assert "accept" in response.headers["vary"].lower()
    assert response.json() == user


async def test_the_etag_is_the_same_in_json_and_msgpack(client: Client, svc: dict[str, str]) -> None:
    user = await bumped(client, svc)
    as_msgpack = await client.get(f"{USERS}/{user['id']}", headers=svc | {"Accept": MSGPACK})
    assert as_msgpack.status_code == 200
    assert as_msgpack.headers["content-type"].startswith(MSGPACK)
    assert as_msgpack.headers["etag"] == '"2"'
    assert msgspec.msgpack.decode(as_msgpack.content)["version"] == 2


async def test_patch_bumps_the_version_and_answers_the_new_etag(client: Client, svc: dict[str, str]) -> None:
    user = await create(client, svc)
    response = await client.patch(f"{USERS}/{user['id']}", json={"full_name": "Changed"}, headers=svc)

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    assert version_of(response) == 2
    again = await client.patch(f"{USERS}/{user['id']}", json={"full_name": "Again"}, headers=svc)
    assert version_of(again) == 3
    reread = await read(client, svc, user["id"])
    assert reread.headers["etag"] == '"3"'
    assert reread.json() == again.json()


async def test_me_answers_with_etags_on_get_and_patch(client: Client, svc: dict[str, str], member: Member) -> None:
    mine = await client.get(ME, headers=member.headers)
    assert mine.status_code == 200, mine.text
    assert version_of(mine) == 1
    assert mine.headers["etag"] == '"1"'

    changed = await client.patch(ME, json={"bio": "mine"}, headers=member.headers)
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == '"2"'
    assert version_of(changed) == 2
    assert (await read(client, svc, member.id)).headers["etag"] == '"2"'


# --- If-None-Match ------------------------------------------------------------------------------


IF_NONE_MATCH_HITS = ['"2"', '"7", "2"', '"2","9"', ' "2" ', "*", 'W/"2"', 'W/"5", W/"2"']


@pytest.mark.parametrize("header", IF_NONE_MATCH_HITS)
async def test_if_none_match_naming_the_current_version_is_304_without_a_body(
    client: Client, svc: dict[str, str], header: str
) -> None:
    user = await bumped(client, svc)
    response = await client.get(f"{USERS}/{user['id']}", headers=svc | {"If-None-Match": header})

    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["etag"] == '"2"'
    assert "accept" in response.headers.get("vary", "").lower()


async def test_304_has_no_body_in_msgpack_either(client: Client, svc: dict[str, str]) -> None:
    user = await create(client, svc)
    response = await client.get(f"{USERS}/{user['id']}", headers=svc | {"If-None-Match": '"1"', "Accept": MSGPACK})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"1"'


@pytest.mark.parametrize("header", IF_NONE_MATCH_HITS)
async def test_if_none_match_on_me_is_304(client: Client, svc: dict[str, str], member: Member, header: str) -> None:
    assert (await client.patch(ME, json={"bio": "v2"}, headers=member.headers)).status_code == 200
    response = await client.get(ME, headers=member.headers | {"If-None-Match": header})
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize("header", ['"1"', '"3"', 'W/"1"', '"abc"', '"02"', '"1", "3"', '"22"', '""'])
async def test_if_none_match_naming_another_version_is_200_with_the_user(
    client: Client, svc: dict[str, str], header: str
) -> None:
    user = await bumped(client, svc)
    response = await client.get(f"{USERS}/{user['id']}", headers=svc | {"If-None-Match": header})
    assert response.status_code == 200, response.text
    assert response.json() == user
    assert response.headers["etag"] == '"2"'


async def test_a_cached_copy_goes_stale_after_a_change(client: Client, svc: dict[str, str], member: Member) -> None:
    first = await client.get(ME, headers=member.headers)
    cached = first.headers["etag"]
    assert (await client.get(ME, headers=member.headers | {"If-None-Match": cached})).status_code == 304

    await client.patch(f"{USERS}/{member.id}", json={"full_name": "Renamed"}, headers=svc)
    fresh = await client.get(ME, headers=member.headers | {"If-None-Match": cached})
    assert fresh.status_code == 200
    assert fresh.json()["full_name"] == "Renamed"
    assert fresh.headers["etag"] != cached
    assert version_of(fresh) == 2


async def test_if_none_match_on_a_missing_user_is_404(client: Client, svc: dict[str, str]) -> None:
    for header in ["*", '"1"']:
        response = await client.get(f"{USERS}/{uuid.uuid4()}", headers=svc | {"If-None-Match": header})
        assert_problem(response, 404)


async def test_if_none_match_does_not_bypass_the_access_check(
    client: Client, svc: dict[str, str], member: Member
) -> None:
    """A 304 would tell a user that someone else's account exists and has that version."""
    other = await create(client, svc)
    for header in ["*", '"1"']:
        response = await client.get(f"{USERS}/{other['id']}", headers=member.headers | {"If-None-Match": header})
        assert_problem(response, 403)


# --- If-Match: success --------------------------------------------------------------------------


# Each builds the header from the user's current version (2).
MATCHING: dict[str, Callable[[int], str]] = {
    "exact": tag,
    "in a list": lambda v: f'"{v + 5}", {tag(v)}',
    "padded": lambda v: f" {tag(v)} ",
    "star": lambda _: "*",
}


@pytest.mark.parametrize("header", MATCHING.values(), ids=MATCHING.keys())
async def test_patch_with_a_matching_if_match_succeeds_and_bumps_the_version(
    client: Client, svc: dict[str, str], header: Callable[[int], str]
) -> None:
    user = await bumped(client, svc)
    response = await client.patch(
        f"{USERS}/{user['id']}", json={"full_name": "Matched"}, headers=svc | {"If-Match": header(2)}
    )

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"3"'
    assert version_of(response) == 3
    assert response.json()["full_name"] == "Matched"
    assert (await read(client, svc, user["id"])).json() == response.json()


async def test_patch_me_with_a_matching_if_match_succeeds(client: Client, svc: dict[str, str], member: Member) -> None:
    response = await client.patch(ME, json={"bio": "matched"}, headers=member.headers | {"If-Match": '"1"'})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    assert version_of(response) == 2
    assert (await read(client, svc, member.id)).json()["bio"] == "matched"


@pytest.mark.parametrize("header", ['"2"', '"1", "2"', "*"])
async def test_delete_with_a_matching_if_match_succeeds(client: Client, svc: dict[str, str], header: str) -> None:
    user = await bumped(client, svc)
    response = await client.delete(f"{USERS}/{user['id']}", headers=svc | {"If-Match": header})
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await client.get(f"{USERS}/{user['id']}", headers=svc), 404)


async def test_the_etag_from_one_write_is_the_if_match_of_the_next(client: Client, svc: dict[str, str]) -> None:
    created = await client.post(USERS, json=body(), headers=svc)
    url, etag = created.headers["location"], created.headers["etag"]
    for n in range(3):
        response = await client.patch(url, json={"bio": f"step {n}"}, headers=svc | {"If-Match": etag})
        assert response.status_code == 200, response.text
        assert response.headers["etag"] != etag
        etag = response.headers["etag"]
    assert etag == '"4"'
    assert (await client.delete(url, headers=svc | {"If-Match": etag})).status_code == 204


# --- If-Match: 412 and nothing changes ----------------------------------------------------------

# Each builds the header from the user's current version (2): a stale, weak, or never-issued tag.
NON_MATCHING: dict[str, Callable[[int], str]] = {
    "stale": lambda v: tag(v - 1),
    "future": lambda v: tag(v + 1),
    "stale list": lambda v: f"{tag(v - 1)}, {tag(v + 1)}",
    "weak current": lambda v: f"W/{tag(v)}",
    "weak in a list": lambda v: f'W/{tag(v)}, "abc"',
    "unknown": lambda _: '"abc"',
    "empty tag": lambda _: '""',
    "leading zero": lambda v: f'"0{v}"',
    "quoted star": lambda _: '"*"',
    "huge": lambda _: '"99999999999999999999"',
    "int4 overflow": lambda _: '"2147483648"',
    "negative": lambda v: f'"-{v}"',
}


@pytest.mark.parametrize("make", NON_MATCHING.values(), ids=NON_MATCHING.keys())
async def test_patch_with_a_non_matching_if_match_is_412_and_changes_nothing(
    client: Client, svc: dict[str, str], make: Callable[[int], str]
) -> None:
    user = await bumped(client, svc)
    before = await snapshot(client, svc, user["id"])
    response = await client.patch(
        f"{USERS}/{user['id']}", json={"full_name": "Lost update"}, headers=svc | {"If-Match": make(2)}
    )

    problem = assert_problem(response, 412)
    assert problem["type"] == "/problems/stale-etag"
    assert "etag" not in response.headers
    assert await snapshot(client, svc, user["id"]) == before


@pytest.mark.parametrize("make", NON_MATCHING.values(), ids=NON_MATCHING.keys())
async def test_delete_with_a_non_matching_if_match_is_412_and_deletes_nothing(
    client: Client, svc: dict[str, str], make: Callable[[int], str]
) -> None:
    user = await bumped(client, svc)
    before = await snapshot(client, svc, user["id"])
    response = await client.delete(f"{USERS}/{user['id']}", headers=svc | {"If-Match": make(2)})

    assert_problem(response, 412)
    assert await snapshot(client, svc, user["id"]) == before


@pytest.mark.parametrize("make", NON_MATCHING.values(), ids=NON_MATCHING.keys())
async def test_patch_me_with_a_non_matching_if_match_is_412_and_changes_nothing(
    client: Client, svc: dict[str, str], member: Member, make: Callable[[int], str]
) -> None:
    assert (await client.patch(ME, json={"bio": "v2"}, headers=member.headers)).status_code == 200
    before = await snapshot(client, svc, member.id)
    response = await client.patch(ME, json={"bio": "lost"}, headers=member.headers | {"If-Match": make(2)})

    assert_problem(response, 412)
    assert await snapshot(client, svc, member.id) == before


@pytest.mark.parametrize("raw", [b'"\xb2"', b'"\xb9"', b'"1\xb3"', b'"\xff"'])
async def test_an_if_match_with_latin1_bytes_is_412_not_500(
    client: Client, svc: dict[str, str], live_url: str, raw: bytes
) -> None:
    """obs-text (0x80-0xFF) is allowed in a tag; `\\xb2` reads as `²`, which `str.isdigit()` calls a digit.
    Over a real socket: the in-process client re-encodes header values as UTF-8."""
    user = await create(client, svc)
    before = await snapshot(client, svc, user["id"])
    url = f"{USERS}/{user['id']}"
    headers = [(b"X-API-Key", svc["X-API-Key"].encode()), (b"If-Match", raw)]
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as live:
        assert_problem(await live.patch(url, json={"bio": "no"}, headers=headers), 412)
        assert_problem(await live.delete(url, headers=headers), 412)
    assert await snapshot(client, svc, user["id"]) == before


async def test_an_empty_patch_checks_if_match_too(client: Client, svc: dict[str, str]) -> None:
    user = await bumped(client, svc)
    before = await snapshot(client, svc, user["id"])
    url = f"{USERS}/{user['id']}"

    assert_problem(await client.patch(url, json={}, headers=svc | {"If-Match": '"1"'}), 412)
    matched = await client.patch(url, json={}, headers=svc | {"If-Match": '"2"'})
    assert matched.status_code == 200, matched.text
    assert matched.headers["etag"] == '"2"'  # nothing was written, so the version stays
    assert await snapshot(client, svc, user["id"]) == before


async def test_a_conflicting_patch_with_a_matching_if_match_is_409_and_changes_nothing(
    client: Client, svc: dict[str, str]
) -> None:
    taken = await create(client, svc)
    user = await create(client, svc)
    before = await snapshot(client, svc, user["id"])
    response = await client.patch(
        f"{USERS}/{user['id']}", json={"email": taken["email"]}, headers=svc | {"If-Match": '"1"'}
    )
    assert_problem(response, 409, field="email")
    assert await snapshot(client, svc, user["id"]) == before


# --- malformed headers and missing users --------------------------------------------------------

MALFORMED = {
    "garbage": "garbage",
    "unquoted": "1",
    "unterminated": '"1',
    "unopened": '1"',
    "two without a comma": '"1" "2"',
    "lower-case weak": 'w/"1"',
    "space in the tag": '"a b"',
    "star in a list": '*, "1"',
    "overly long": ", ".join(tag(n) for n in range(1, 400)),
    "overly long tag": '"' + "7" * 2000 + '"',
}


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_if_match_is_400_and_changes_nothing(
    client: Client, svc: dict[str, str], header: str
) -> None:
    user = await create(client, svc)
    before = await snapshot(client, svc, user["id"])
    url = f"{USERS}/{user['id']}"

    assert_problem(await client.patch(url, json={"bio": "no"}, headers=svc | {"If-Match": header}), 400)
    assert_problem(await client.delete(url, headers=svc | {"If-Match": header}), 400)
    assert await snapshot(client, svc, user["id"]) == before


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_if_match_on_me_is_400(
    client: Client, svc: dict[str, str], member: Member, header: str
) -> None:
    before = await snapshot(client, svc, member.id)
    assert_problem(await client.patch(ME, json={"bio": "no"}, headers=member.headers | {"If-Match": header}), 400)
    assert await snapshot(client, svc, member.id) == before


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_if_none_match_is_400(
    client: Client, svc: dict[str, str], member: Member, header: str
) -> None:
    assert_problem(await client.get(f"{USERS}/{member.id}", headers=svc | {"If-None-Match": header}), 400)
    assert_problem(await client.get(ME, headers=member.headers | {"If-None-Match": header}), 400)


@pytest.mark.parametrize("header", ['"1"', "*", 'W/"1"', '"abc"'])
async def test_if_match_on_a_missing_user_is_404(client: Client, svc: dict[str, str], header: str) -> None:
    url = f"{USERS}/{uuid.uuid4()}"
    problem = assert_problem(await client.patch(url, json={"bio": "x"}, headers=svc | {"If-Match": header}), 404)
    assert problem["type"] == "/problems/not-found"
    assert_problem(await client.patch(url, json={}, headers=svc | {"If-Match": header}), 404)
    assert_problem(await client.delete(url, headers=svc | {"If-Match": header}), 404)


async def test_if_match_on_a_deleted_user_is_404(client: Client, svc: dict[str, str]) -> None:
    user = await create(client, svc)
    url = f"{USERS}/{user['id']}"
    assert (await client.delete(url, headers=svc | {"If-Match": '"1"'})).status_code == 204
    assert_problem(await client.patch(url, json={"bio": "x"}, headers=svc | {"If-Match": '"1"'}), 404)
    assert_problem(await client.delete(url, headers=svc | {"If-Match": '"1"'}), 404)


# --- lost updates between truly parallel requests -----------------------------------------------


async def test_concurrent_patches_with_one_if_match_give_one_200_and_one_412(
    client: Client, svc: dict[str, str], live_url: str
) -> None:
    user = await create(client, svc)
    url = f"{USERS}/{user['id']}"
    async with httpx.AsyncClient(base_url=live_url, timeout=30, headers=svc) as live:
        for round_ in range(5):
            etag = (await live.get(url)).headers["etag"]
            names = [f"Writer A{round_}", f"Writer B{round_}"]
            responses = await asyncio.gather(
                *(live.patch(url, json={"full_name": name}, headers={"If-Match": etag}) for name in names)
            )

            assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
            (winner,) = [r for r in responses if r.status_code == 200]
            (loser,) = [r for r in responses if r.status_code == 412]
            assert loser.headers["content-type"].startswith("application/problem+json")
            after = await read(client, svc, user["id"])
            assert after.json() == winner.json()
            assert after.json()["full_name"] in names
            assert after.headers["etag"] == winner.headers["etag"] == tag(int(etag[1:-1]) + 1)


async def test_concurrent_deletes_with_one_if_match_give_one_204(
    client: Client, svc: dict[str, str], live_url: str
) -> None:
    user = await create(client, svc)
    url = f"{USERS}/{user['id']}"
    async with httpx.AsyncClient(base_url=live_url, timeout=30, headers=svc) as live:
        responses = await asyncio.gather(
            live.patch(url, json={"bio": "racing"}, headers={"If-Match": '"1"'}),
            live.delete(url, headers={"If-Match": '"1"'}),
        )
    statuses = [r.status_code for r in responses]
    assert sorted(statuses) in ([200, 412], [204, 404], [204, 412]), [r.text for r in responses]
    after = await client.get(url, headers=svc)
    if statuses[0] == 200:  # the PATCH won: the user is there, at version 2
        assert version_of(after) == 2
        assert after.json()["bio"] == "racing"
    else:
        assert_problem(after, 404)


# --- every write path bumps the version ---------------------------------------------------------


async def test_an_admin_change_of_is_active_bumps_the_version(client: Client, svc: dict[str, str]) -> None:
    user = await create(client, svc)
    url = f"{USERS}/{user['id']}"
    response = await client.patch(url, json={"is_active": False}, headers=svc | {"If-Match": '"1"'})
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert version_of(response) == 2
    assert_problem(await client.patch(url, json={"is_active": True}, headers=svc | {"If-Match": '"1"'}), 412)
    assert (await read(client, svc, user["id"])).json()["is_active"] is False


async def test_a_password_change_bumps_the_version(client: Client, svc: dict[str, str], member: Member) -> None:
    before = await snapshot(client, svc, member.id)
    response = await client.post(
        MY_PASSWORD,
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=member.headers,
    )
    assert response.status_code == 204, response.text

    after, etag = await snapshot(client, svc, member.id)
    assert etag != before[1]
    assert after["version"] > before[0]["version"]
    assert etag == tag(after["version"])
    stale = await client.patch(f"{USERS}/{member.id}", json={"bio": "x"}, headers=svc | {"If-Match": before[1]})
    assert_problem(stale, 412)


async def test_a_wrong_current_password_changes_nothing(client: Client, svc: dict[str, str], member: Member) -> None:
    before = await snapshot(client, svc, member.id)
    response = await client.post(
        MY_PASSWORD,
        json={"current_password": "not the password", "new_password": "whatever it is"},
        headers=member.headers,
    )
    assert_problem(response, 401)
    assert await snapshot(client, svc, member.id) == before


async def test_logging_out_everywhere_bumps_the_version(client: Client, svc: dict[str, str], member: Member) -> None:
    before = await snapshot(client, svc, member.id)
    assert (await client.post(LOGOUT_ALL, headers=member.headers)).status_code == 204
    after, etag = await snapshot(client, svc, member.id)
    assert etag != before[1]
    assert after["version"] == before[0]["version"] + 1


async def test_patch_me_bumps_the_version_seen_by_others(client: Client, svc: dict[str, str], member: Member) -> None:
    _, before = await snapshot(client, svc, member.id)
    assert (await client.patch(ME, json={"full_name": "Me"}, headers=member.headers)).status_code == 200
    _, after = await snapshot(client, svc, member.id)
    assert before == '"1"'
    assert after == '"2"'


async def test_a_rejected_patch_does_not_bump_the_version(client: Client, svc: dict[str, str], member: Member) -> None:
    before = await snapshot(client, svc, member.id)
    url = f"{USERS}/{member.id}"
    assert_problem(await client.patch(url, json={"username": "NOT VALID"}, headers=svc), 400)
    assert_problem(await client.patch(url, json={"is_superuser": True}, headers=svc), 403)
    assert_problem(await client.patch(ME, json={"is_active": False}, headers=member.headers), 400)
    assert_problem(await client.patch(url, json={"bio": "x"}, headers=bearer("nonsense")), 401)
    assert await snapshot(client, svc, member.id) == before
