"""The OAuth 2.0 endpoints driven by independent, standard libraries against a real `accounts serve` with two
workers: authlib's OAuth 2 client (client credentials with basic and post authentication, introspection,
revocation), PyJWT verifying tokens with the keys found through discovery, and authlib's RFC 8414 metadata checks.
Every check of "at once, in every worker" is asked of both workers, over fresh connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.database import insert_api_key
from tests.integration.auth.oauth import (
    AUTHORIZATION_SERVER,
    OPENID_CONFIGURATION,
    USERINFO,
    ServiceClient,
    make_client,
)
from tests.integration.auth.support import ME, Client, LoggedIn, assert_oauth_error, bearer


@pytest.fixture(autouse=True)
def plain_http_is_fine_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """authlib refuses http:// endpoints unless told that this is a test on loopback."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture
async def metadata(live_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live_url) as http:
        document: dict[str, Any] = (await http.get(AUTHORIZATION_SERVER)).json()
    return document


@pytest.fixture
async def introspector(client: Client, admin: LoggedIn) -> ServiceClient:
    return await make_client(client, admin, "tokens:introspect", name="gateway")


def oauth_client(service: ServiceClient, method: str = "client_secret_basic") -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=service.client_id,
        client_secret=service.client_secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
    )


@pytest.fixture
async def gateway(introspector: ServiceClient) -> AsyncIterator[AsyncOAuth2Client]:
    async with oauth_client(introspector) as session:
        yield session


async def fresh_get(live_url: str, path: str, headers: dict[str, str], times: int = 8) -> set[int]:
    """The statuses of `times` requests, each on a new connection (so both workers answer some)."""
    statuses = set()
    for _ in range(times):
        async with httpx.AsyncClient(base_url=live_url) as http:
            statuses.add((await http.get(path, headers=headers)).status_code)
    return statuses


async def test_discovery_documents_meet_rfc_8414_and_name_the_tokens_issuer(
    client: Client, settings: Settings, metadata: dict[str, Any], live_url: str
) -> None:
    https = msgspec.structs.replace(settings, public_url="https://accounts.example.com")
    async with AsyncTestClient(create_app(https)) as secure:
        for path in (AUTHORIZATION_SERVER, OPENID_CONFIGURATION):
            document = (await secure.get(path)).json()
            AuthorizationServerMetadata(document).validate()  # raises on any missing or malformed field
            assert document["issuer"] == "https://accounts.example.com"
            assert document["token_endpoint"] == "https://accounts.example.com/api/v1/auth/token"
    openid = (await client.get(OPENID_CONFIGURATION)).json()
    assert {"jwks_uri", "subject_types_supported", "id_token_signing_alg_values_supported"} <= openid.keys()
    assert "client_credentials" in metadata["grant_types_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(metadata["token_endpoint_auth_methods_supported"])
    assert "tokens:introspect" in metadata["scopes_supported"]
    assert metadata["issuer"] == settings.issuer


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_credentials_token_verifies_with_keys_found_through_discovery(
    client: Client, admin: LoggedIn, metadata: dict[str, Any], live_url: str, method: str
) -> None:
    service = await make_client(client, admin, "users:read", "users:write")
    async with oauth_client(service, method) as session:
        token = await session.fetch_token(
            live_url + "/api/v1/auth/token", grant_type="client_credentials", scope="users:read"
        )
    assert token["scope"] == "users:read"
    assert "refresh_token" not in token

    keys = jwt.PyJWKClient(metadata["jwks_uri"].replace(metadata["issuer"], live_url))
    signing_key = keys.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"],
        signing_key,
        algorithms=["EdDSA"],
        audience="accounts",
        issuer=metadata["issuer"],
        options={"require": ["exp", "iat", "jti", "sub", "client_id", "scope", "aud", "iss"]},
    )
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == service.client_id
    assert claims["scope"] == "users:read"


async def test_introspection_answers_for_every_kind_of_token(
    client: Client, admin: LoggedIn, user_a: LoggedIn, gateway: AsyncOAuth2Client, live_url: str
) -> None:
    introspect = live_url + "/api/v1/auth/introspect"
    service = await make_client(client, admin, "users:read")
    async with oauth_client(service) as session:
        service_token = (await session.fetch_token(live_url + "/api/v1/auth/token", grant_type="client_credentials"))[
            "access_token"
        ]

    answer = await gateway.introspect_token(introspect, token=user_a.access_token)
    assert answer.headers["content-type"] == "application/json"
    assert (answer.headers["cache-control"], answer.headers["pragma"]) == ("no-store", "no-cache")
    user = answer.json()
    assert user["active"] is True
    assert user["sub"] == user_a.id
    assert user["token_type"] == "Bearer"
    assert user["iss"] == (await client.get(AUTHORIZATION_SERVER)).json()["issuer"]
    assert user["exp"] > user["iat"]
    machine = (await gateway.introspect_token(introspect, token=service_token)).json()
    assert (machine["active"], machine["client_id"], machine["scope"]) == (True, service.client_id, "users:read")
    refresh = (
        await gateway.introspect_token(introspect, token=user_a.refresh_token, token_type_hint="refresh_token")
    ).json()
    assert (refresh["active"], refresh["sub"], refresh["token_type"]) == (True, user_a.id, "refresh_token")
    for junk in ("garbage", "a.b.c", user_a.access_token[:-4] + "AAAA", "x" * 43):
        assert (await gateway.introspect_token(introspect, token=junk)).json() == {"active": False}


async def test_introspection_needs_the_scope(
    client: Client, admin: LoggedIn, user_a: LoggedIn, live_url: str, database_url: str
) -> None:
    url = live_url + "/api/v1/auth/introspect"
    plain = await make_client(client, admin, "users:read")
    async with oauth_client(plain) as session:
        assert_oauth_error(await session.introspect_token(url, token=user_a.access_token), 400, "unauthorized_client")
    async with httpx.AsyncClient() as http:
        assert_oauth_error(await http.post(url, data={"token": user_a.access_token}), 401, "invalid_client")
        with_scope = await insert_api_key(database_url, ["tokens:introspect"])
        answer = await http.post(url, data={"token": user_a.access_token}, headers={"X-API-Key": with_scope})
        assert answer.json()["active"] is True
        without = await insert_api_key(database_url, ["users:read"])
        refused = await http.post(url, data={"token": user_a.access_token}, headers={"X-API-Key": without})
        assert_oauth_error(refused, 400, "unauthorized_client")


@pytest.mark.parametrize("change", ["logout-all", "deactivated", "password"])
async def test_introspection_turns_inactive_at_once_when_the_user_changes(
    *, client: Client, admin: LoggedIn, user_a: LoggedIn, introspector: ServiceClient, live_url: str, change: str
) -> None:
    url = live_url + "/api/v1/auth/introspect"
    async with oauth_client(introspector) as gateway:
        assert (await gateway.introspect_token(url, token=user_a.access_token)).json()["active"] is True
    if change == "logout-all":
        done = await client.post("/api/v1/auth/logout-all", headers=user_a.headers)
    elif change == "deactivated":
        done = await client.patch(f"/api/v1/users/{user_a.id}", json={"is_active": False}, headers=admin.headers)
    else:
        done = await client.post(
            f"{ME}/password",
            json={"current_password": user_a.account.password, "new_password": "a new password entirely"},
            headers=user_a.headers,
        )
    assert done.status_code in {200, 204}, done.text
    for _ in range(8):  # fresh connections: both workers
        async with oauth_client(introspector) as session:
            assert (await session.introspect_token(url, token=user_a.access_token)).json() == {"active": False}
            assert (await session.introspect_token(url, token=user_a.refresh_token)).json() == {"active": False}


async def test_a_revoked_access_token_is_refused_at_once_by_every_worker(
    user_a: LoggedIn, gateway: AsyncOAuth2Client, live_url: str
) -> None:
    assert await fresh_get(live_url, ME, bearer(user_a.access_token)) == {200}
    async with AsyncOAuth2Client() as public:  # a user's token needs no client authentication
        revoked = await public.revoke_token(
            live_url + "/api/v1/auth/revoke", token=user_a.access_token, token_type_hint="access_token"
        )
    assert revoked.status_code == 200, revoked.text
    assert await fresh_get(live_url, ME, bearer(user_a.access_token)) == {401}
    answer = await gateway.introspect_token(live_url + "/api/v1/auth/introspect", token=user_a.access_token)
    assert answer.json() == {"active": False}


async def test_revoking_a_refresh_token_revokes_its_family(
    client: Client, user_a: LoggedIn, gateway: AsyncOAuth2Client, live_url: str
) -> None:
    renewed = await client.post("/api/v1/auth/refresh", json={"refresh_token": user_a.refresh_token})
    latest = renewed.json()["refresh_token"]
    async with httpx.AsyncClient() as http:
        response = await http.post(live_url + "/api/v1/auth/revoke", data={"token": user_a.refresh_token})
    assert response.status_code == 200
    # The spent token named the family; the newest one, never sent here, is revoked with it.
    assert (await gateway.introspect_token(live_url + "/api/v1/auth/introspect", token=latest)).json() == {
        "active": False
    }
    refused = await client.post("/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": latest})
    assert_oauth_error(refused, 400, "invalid_grant")


async def test_a_clients_token_is_revoked_by_that_client_only(client: Client, admin: LoggedIn, live_url: str) -> None:
    owner = await make_client(client, admin, "users:read", name="owner")
    other = await make_client(client, admin, "users:read", name="other")
    url = live_url + "/api/v1/auth/revoke"
    async with oauth_client(owner) as session:
        token = (await session.fetch_token(live_url + "/api/v1/auth/token", grant_type="client_credentials"))[
            "access_token"
        ]
    async with oauth_client(other) as session:
        assert_oauth_error(await session.revoke_token(url, token=token), 400, "unauthorized_client")
    async with httpx.AsyncClient() as http:
        assert_oauth_error(await http.post(url, data={"token": token}), 400, "unauthorized_client")
    assert await fresh_get(live_url, "/api/v1/users", bearer(token)) == {200}
    async with oauth_client(owner, "client_secret_post") as session:
        assert (await session.revoke_token(url, token=token)).status_code == 200
    assert await fresh_get(live_url, "/api/v1/users", bearer(token)) == {401}


async def test_revocation_is_200_for_unknown_tokens_and_400_without_one(live_url: str) -> None:
    async with httpx.AsyncClient(base_url=live_url) as http:
        for token in ("never-issued", "a.b.c"):
            answer = await http.post("/api/v1/auth/revoke", data={"token": token, "token_type_hint": "whatever"})
            assert answer.status_code == 200, answer.text
        missing = await http.post("/api/v1/auth/revoke", data={"token_type_hint": "access_token"})
        assert_oauth_error(missing, 400, "invalid_request")


async def test_userinfo_gives_the_standard_claims_of_the_user(
    client: Client, admin: LoggedIn, user_a: LoggedIn, service_key: str
) -> None:
    info = (await client.get(USERINFO, headers=user_a.headers)).json()
    assert info == {
        "sub": user_a.id,
        "email": user_a.account.email,
        "email_verified": False,
        "preferred_username": user_a.account.username,
        "updated_at": info["updated_at"],
    }
    assert (await client.get(USERINFO, headers={"X-API-Key": service_key})).status_code == 403
    service = await make_client(client, admin, "users:read")
    token = (
        await client.post("/api/v1/auth/token", data={"grant_type": "client_credentials"}, auth=service.basic)
    ).json()
    assert (await client.get(USERINFO, headers=bearer(token["access_token"]))).status_code == 403
