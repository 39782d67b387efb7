"""Who may call what: every kind of caller against every guarded endpoint, with the exact status, and
what the call did (or did not do) to the database."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from joserfc.jwk import OKPKey

from accounts.config import Settings
from tests.database import insert_api_key
from tests.integration.auth.support import (
    API_KEYS,
    ME,
    USERS,
    Account,
    Client,
    MakeUser,
    assert_unauthenticated,
    claims_for,
    log_in,
    sign,
    sql,
)
from tests.problems import assert_problem

ENDPOINTS = ("list", "create", "get_a", "patch_a", "delete_a", "me", "keys_list", "keys_create", "batch_get_a")

# fmt: off
EXPECTED: dict[str, tuple[int, ...]] = {
    #                      list create get_a patch_a delete_a  me  keys_list keys_create batch_get_a
    "anonymous":          (401,  401,   401,  401,    401,    401,  401,      401,        401),
    "user_a":             (403,  403,   200,  200,    403,    200,  403,      403,        200),
    "user_b":             (403,  403,   403,  403,    403,    200,  403,      403,        200),
    "admin":              (200,  201,   200,  200,    204,    200,  200,      201,        200),
    "key_read":           (200,  403,   200,  403,    403,    403,  403,      403,        200),
    "key_write":          (403,  201,   403,  200,    204,    403,  403,      403,        403),
    "key_read_write":     (200,  201,   200,  200,    204,    403,  403,      403,        200),
    "key_other_scope":    (403,  403,   403,  403,    403,    403,  403,      403,        403),
    "expired_token":      (401,  401,   401,  401,    401,    401,  401,      401,        401),
    "forged_token":       (401,  401,   401,  401,    401,    401,  401,      401,        401),
}
# fmt: on
MATRIX = [
    pytest.param(caller, endpoint, statuses[i], id=f"{caller}-{endpoint}")
    for caller, statuses in EXPECTED.items()
    for i, endpoint in enumerate(ENDPOINTS)
]

NEW_USER = {"email": "made-in-matrix@example.com", "username": "made-in-matrix"}


class World:
    """Users A and B and an admin in the database, and a way to call as any kind of caller."""

    def __init__(
        self,
        *,
        client: Client,
        database_url: str,
        settings: Settings,
        signing_key: OKPKey,
        a: Account,
        b: Account,
        admin: Account,
    ) -> None:
        self.client = client
        self.database_url = database_url
        self.settings = settings
        self.signing_key = signing_key
        self.a, self.b, self.admin = a, b, admin

    async def headers(self, caller: str) -> dict[str, str]:
        if caller == "anonymous":
            return {}
        if caller in {"user_a", "user_b", "admin"}:
            account = {"user_a": self.a, "user_b": self.b, "admin": self.admin}[caller]
            return (await log_in(self.client, account)).headers
        if caller.startswith("key_"):
            scopes = {
                "key_read": ["users:read"],
                "key_write": ["users:write"],
                "key_read_write": ["users:read", "users:write"],
                "key_other_scope": ["audit:read"],
            }[caller]
            return {"X-API-Key": await insert_api_key(self.database_url, scopes)}
        kid = self.signing_key.thumbprint()
        if caller == "expired_token":
            # Signed with the real key for the admin, in every other way valid: only its age makes it fail.
            now = int(time.time())
            claims = claims_for(
                self.settings, self.admin.id, iat=now - 4000, nbf=now - 4000, exp=now - 3000, roles=["admin"]
            )
            return {"Authorization": f"Bearer {sign(claims, self.signing_key, kid=kid)}"}
        assert caller == "forged_token"
        # Another key, presenting the real key's id: the admin's claims with a signature the service never made.
        forger = OKPKey.generate_key("Ed25519")
        claims = claims_for(self.settings, self.admin.id, roles=["admin"], scope="users:read users:write")
        return {"Authorization": f"Bearer {sign(claims, forger, kid=kid)}"}

    async def call(self, endpoint: str, headers: dict[str, str]) -> httpx.Response:
        a = f"{USERS}/{self.a.id}"
        calls: dict[str, tuple[str, str, Any]] = {
            "list": ("GET", USERS, None),
            "create": ("POST", USERS, NEW_USER),
            "get_a": ("GET", a, None),
            "patch_a": ("PATCH", a, {"full_name": "Patched In Matrix"}),
            "delete_a": ("DELETE", a, None),
            "me": ("GET", ME, None),
            "keys_list": ("GET", API_KEYS, None),
            "keys_create": ("POST", API_KEYS, {"name": "matrix", "scopes": ["users:read"]}),
            "batch_get_a": ("POST", f"{USERS}/batch-get", {"ids": [self.a.id]}),
        }
        method, path, body = calls[endpoint]
        return await self.client.request(method, path, json=body, headers=headers)

    async def user_a_row(self) -> Any:
        rows = await sql(self.database_url, "SELECT full_name FROM users WHERE id = $1", self.a.id)
        return rows[0] if rows else None


@pytest.fixture
def world(
    *,
    client: Client,
    database_url: str,
    settings: Settings,
    signing_key: OKPKey,
    account_a: Account,
    account_b: Account,
    admin_account: Account,
) -> World:
    return World(
        client=client,
        database_url=database_url,
        settings=settings,
        signing_key=signing_key,
        a=account_a,
        b=account_b,
        admin=admin_account,
    )


@pytest.mark.parametrize(("caller", "endpoint", "status"), MATRIX)
async def test_access_matrix(world: World, caller: str, endpoint: str, status: int) -> None:
    response = await world.call(endpoint, await world.headers(caller))

    assert response.status_code == status, response.text
    if status == 401:
        assert_unauthenticated(response, error=None if caller == "anonymous" else "invalid_token")
    elif status == 403:
        assert_problem(response, 403)
    else:
        await check_success(world, caller, endpoint, response.json() if status != 204 else None)
    await check_side_effects(world, endpoint, succeeded=response.is_success)


async def check_success(world: World, caller: str, endpoint: str, body: Any) -> None:
    """A 2xx answer carries what was asked for."""
    if endpoint == "list":
        assert {u["id"] for u in body["items"]} == {world.a.id, world.b.id, world.admin.id}
    elif endpoint in {"get_a", "patch_a"}:
        assert body["id"] == world.a.id
    elif endpoint == "me":
        assert body["id"] == {"user_a": world.a, "user_b": world.b, "admin": world.admin}[caller].id
    elif endpoint == "create":
        assert body["username"] == NEW_USER["username"]
    elif endpoint == "keys_list":
        assert isinstance(body["items"], list)
    elif endpoint == "keys_create":
        assert body["key"].startswith("acck_")
    elif endpoint == "batch_get_a":
        # User B may not read A: A is missing for B, as an id that names no one would be.
        seen = caller != "user_b"
        assert [u["id"] for u in body["items"]] == ([world.a.id] if seen else [])
        assert body["missing"] == {"ids": [] if seen else [world.a.id], "emails": []}


async def check_side_effects(world: World, endpoint: str, *, succeeded: bool) -> None:
    """A write happened if and only if it was answered with success."""
    if endpoint == "create":
        rows = await sql(world.database_url, "SELECT 1 FROM users WHERE username = $1", NEW_USER["username"])
        assert len(rows) == (1 if succeeded else 0)
    elif endpoint == "patch_a":
        assert (await world.user_a_row())["full_name"] == ("Patched In Matrix" if succeeded else None)
    elif endpoint == "delete_a":
        assert (await world.user_a_row() is None) == succeeded
    elif endpoint == "keys_create":
        rows = await sql(world.database_url, "SELECT 1 FROM api_keys WHERE name = 'matrix'")
        assert len(rows) == (1 if succeeded else 0)


# --- who may change the flags ---------------------------------------------------------------------

FLAG_RULES = [
    # (caller, target, body, status)
    ("user_a", "a", {"is_active": False}, 403),
    ("user_a", "a", {"is_superuser": True}, 403),
    ("user_a", "a", {"full_name": "Still Me", "is_active": True}, 403),
    ("user_a", "a", {"full_name": "Still Me"}, 200),
    ("user_a", "b", {"full_name": "Not Mine"}, 403),
    ("user_a", "b", {"is_active": False}, 403),
    ("admin", "admin", {"is_active": False}, 403),
    ("admin", "admin", {"is_superuser": False}, 403),
    ("admin", "a", {"is_superuser": True}, 200),
    ("admin", "a", {"is_active": False}, 200),
    ("admin", "b", {"is_active": False, "is_superuser": True}, 200),
    ("key_write", "a", {"is_active": False}, 200),
    ("key_write", "a", {"is_superuser": True}, 403),
    ("key_write", "admin", {"is_superuser": False}, 403),
    ("key_read_write", "a", {"is_superuser": True}, 403),
    ("key_read", "a", {"is_active": False}, 403),
]


@pytest.mark.parametrize(
    ("caller", "target", "body", "status"),
    [pytest.param(*rule, id=f"{rule[0]}-{rule[1]}-{'-'.join(rule[2])}") for rule in FLAG_RULES],
)
async def test_who_may_change_which_fields(
    world: World, caller: str, target: str, body: dict[str, Any], status: int
) -> None:
    account = {"a": world.a, "b": world.b, "admin": world.admin}[target]
    columns = "full_name, is_active, is_superuser"
    before = await sql(world.database_url, f"SELECT {columns} FROM users WHERE id = $1", account.id)  # noqa: S608

    response = await world.client.patch(f"{USERS}/{account.id}", json=body, headers=await world.headers(caller))

    assert response.status_code == status, response.text
    after = await sql(world.database_url, f"SELECT {columns} FROM users WHERE id = $1", account.id)  # noqa: S608
    if status == 403:
        assert_problem(response, 403)
        assert after == before
    else:
        assert {name: after[0][name] for name in body} == body
        assert {name: response.json()[name] for name in body} == body


async def test_admin_rights_are_checked_on_every_request(
    client: Client, make_user: MakeUser, admin_account: Account
) -> None:
    """An admin demoted by another admin loses admin access with the very next request."""
    other = await log_in(client, await make_user(admin=True))
    demoted = await log_in(client, admin_account)
    assert (await client.get(USERS, headers=demoted.headers)).status_code == 200

    response = await client.patch(f"{USERS}/{admin_account.id}", json={"is_superuser": False}, headers=other.headers)
    assert response.status_code == 200, response.text

    assert_problem(await client.get(USERS, headers=demoted.headers), 403)
    assert_problem(await client.get(API_KEYS, headers=demoted.headers), 403)
    assert (await client.get(ME, headers=demoted.headers)).status_code == 200
