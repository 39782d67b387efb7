"""Service clients: made, listed, rotated and deleted by admins; the client-credentials grant and its errors."""

from __future__ import annotations

import base64

import jwt
import pytest

from accounts.config import Settings
from accounts.core.security import secret_hash
from tests.integration.auth.oauth import CLIENTS, INTROSPECT, client_token, make_client
from tests.integration.auth.support import (
    TOKEN,
    USERS,
    Client,
    LoggedIn,
    assert_oauth_error,
    assert_unauthenticated,
    bearer,
    sql,
    unverified_parts,
)
from tests.problems import assert_problem


async def test_an_admin_makes_a_client_whose_secret_is_shown_once_and_kept_as_a_hash(
    client: Client, admin: LoggedIn, database_url: str
) -> None:
    created = await client.post(CLIENTS, json={"name": "billing", "scopes": ["users:read"]}, headers=admin.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["client_secret"].startswith("accs_")
    assert created.headers["location"] == f"{CLIENTS}/{body['client_id']}"
    assert body["created_by"] == admin.id
    assert body["scopes"] == ["users:read"]

    (row,) = await sql(database_url, "SELECT * FROM oauth_clients")
    assert bytes(row["secret_hash"]) == secret_hash(body["client_secret"])
    assert body["client_secret"].encode() not in b"".join(
        bytes(value) for value in row.values() if isinstance(value, bytes | memoryview)
    )
    read = await client.get(created.headers["location"], headers=admin.headers)
    assert read.status_code == 200
    assert "client_secret" not in read.json()
    listed = await client.get(CLIENTS, headers=admin.headers)
    assert [item["client_id"] for item in listed.json()["items"]] == [body["client_id"]]
    assert "client_secret" not in listed.json()["items"][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes[0]"),
        ({"name": "", "scopes": ["users:read"]}, "name"),
        ({"name": "a\u0000b", "scopes": ["users:read"]}, "name"),
        ({"name": "x", "scopes": ["users:read"], "secret": "mine"}, "secret"),
    ],
)
async def test_a_bad_client_is_refused_and_nothing_is_kept(
    client: Client, admin: LoggedIn, database_url: str, body: dict[str, object], field: str
) -> None:
    assert_problem(await client.post(CLIENTS, json=body, headers=admin.headers), 400, field=field)
    assert await sql(database_url, "SELECT id FROM oauth_clients") == []


async def test_only_admins_manage_clients(client: Client, user_a: LoggedIn, service_key: str) -> None:
    body = {"name": "x", "scopes": ["users:read"]}
    assert_problem(await client.post(CLIENTS, json=body, headers=user_a.headers), 403)
    assert_problem(await client.get(CLIENTS, headers={"X-API-Key": service_key}), 403)
    assert_unauthenticated(await client.get(CLIENTS), error=None)


async def test_a_client_gets_a_token_that_calls_the_api_within_its_scopes(
    client: Client, admin: LoggedIn, settings: Settings, user_a: LoggedIn
) -> None:
    service = await make_client(client, admin, "users:read")
    response = await client.post(TOKEN, data={"grant_type": "client_credentials"}, auth=service.basic)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "users:read"
    assert body["expires_in"] == settings.access_token_ttl
    assert "refresh_token" not in body  # RFC 6749 section 4.4.3
    header, claims = unverified_parts(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == service.client_id
    assert claims["iss"] == settings.issuer
    assert {"aud", "exp", "iat", "jti"} <= claims.keys()

    headers = bearer(body["access_token"])
    assert (await client.get(f"{USERS}/{user_a.id}", headers=headers)).status_code == 200
    assert_problem(await client.patch(f"{USERS}/{user_a.id}", json={"bio": "x"}, headers=headers), 403)
    assert_problem(await client.get("/api/v1/users/me", headers=headers), 403)  # a client is no user


async def test_client_secret_post_works_as_basic_does(client: Client, admin: LoggedIn) -> None:
    service = await make_client(client, admin, "users:read", "users:write")
    form = {
        "grant_type": "client_credentials",
        "client_id": service.client_id,
        "client_secret": service.client_secret,
        "scope": "users:write",
    }
    response = await client.post(TOKEN, data=form)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "users:write"


async def test_basic_credentials_are_form_decoded_as_rfc_6749_says(client: Client, admin: LoggedIn) -> None:
    """Section 2.3.1: id and secret are application/x-www-form-urlencoded before they are joined with a colon."""
    service = await make_client(client, admin, "users:read")
    encoded = base64.b64encode(f"{service.client_id}:{service.client_secret.replace('_', '%5F')}".encode()).decode()
    headers = {"Authorization": f"Basic {encoded}"}
    response = await client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=headers)
    assert response.status_code == 200, response.text


async def test_scopes_asked_for_must_be_the_clients(client: Client, admin: LoggedIn) -> None:
    service = await make_client(client, admin, "users:read")
    form = {"grant_type": "client_credentials", "scope": "users:read users:write"}
    body = assert_oauth_error(await client.post(TOKEN, data=form, auth=service.basic), 400, "invalid_scope")
    assert "users:write" in body["error_description"]


@pytest.mark.parametrize(
    "credentials",
    ["wrong-secret", "unknown-client", "not-a-uuid", "malformed-basic", "none"],
)
async def test_a_client_that_fails_to_authenticate_gets_invalid_client(
    client: Client, admin: LoggedIn, credentials: str
) -> None:
    service = await make_client(client, admin, "users:read")
    headers = {
        "wrong-secret": {"Authorization": "Basic " + base64.b64encode(f"{service.client_id}:accs_x".encode()).decode()},
        "unknown-client": {
            "Authorization": "Basic "
            + base64.b64encode(f"0190f8d6-64c4-7d8f-b2a4-0a7d3b2e9c11:{service.client_secret}".encode()).decode()
        },
        "not-a-uuid": {"Authorization": "Basic " + base64.b64encode(b"billing:secret").decode()},
        "malformed-basic": {"Authorization": "Basic %%%"},
        "none": {},
    }[credentials]
    response = await client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=headers)
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"username": "x", "password": "y"}, "invalid_request"),
        ({"grant_type": "password", "username": "nobody"}, "invalid_request"),
        ({"grant_type": "password", "username": "nobody", "password": "wrong"}, "invalid_grant"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "not-a-token"}, "invalid_grant"),
        ({"grant_type": "password", "username": "a\u0000b", "password": "y"}, "invalid_request"),
    ],
)
async def test_token_endpoint_errors_are_rfc_6749_errors(client: Client, form: dict[str, str], error: str) -> None:
    assert_oauth_error(await client.post(TOKEN, data=form), 400, error)


async def test_a_body_that_is_not_a_form_is_invalid_request(client: Client) -> None:
    response = await client.post(TOKEN, json={"grant_type": "client_credentials"})
    assert response.status_code in {400, 415}
    assert response.json()["error"] == "invalid_request"


async def test_refresh_token_grant_on_the_token_endpoint_rotates(client: Client, user_a: LoggedIn) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": user_a.refresh_token}
    renewed = await client.post(TOKEN, data=form)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["refresh_token"] != user_a.refresh_token
    assert_oauth_error(await client.post(TOKEN, data=form), 400, "invalid_grant")  # spent


async def test_rotation_keeps_the_old_secret_for_the_overlap_only(client: Client, admin: LoggedIn) -> None:
    service = await make_client(client, admin, "users:read")
    rotated = await client.post(f"{CLIENTS}/{service.client_id}/secret", json={}, headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    assert new_secret != service.client_secret
    assert rotated.json()["previous_secret_expires_at"] is not None

    def grant(secret: str) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": service.client_id, "client_secret": secret}

    assert (await client.post(TOKEN, data=grant(service.client_secret))).status_code == 200  # in the overlap
    assert (await client.post(TOKEN, data=grant(new_secret))).status_code == 200

    again = await client.post(
        f"{CLIENTS}/{service.client_id}/secret", json={"overlap_seconds": 0}, headers=admin.headers
    )
    assert again.status_code == 200
    assert again.json()["previous_secret_expires_at"] is None
    for stale in (service.client_secret, new_secret):
        assert_oauth_error(await client.post(TOKEN, data=grant(stale)), 401, "invalid_client")
    assert (await client.post(TOKEN, data=grant(again.json()["client_secret"]))).status_code == 200


async def test_deleting_a_client_stops_its_secret_and_its_tokens_at_once(client: Client, admin: LoggedIn) -> None:
    service = await make_client(client, admin, "users:read", "tokens:introspect")
    token = await client_token(client, service)
    assert (await client.get(USERS, headers=bearer(token))).status_code == 200

    assert (await client.delete(f"{CLIENTS}/{service.client_id}", headers=admin.headers)).status_code == 204
    assert_problem(await client.get(f"{CLIENTS}/{service.client_id}", headers=admin.headers), 404)
    assert_unauthenticated(await client.get(USERS, headers=bearer(token)))
    response = await client.post(TOKEN, data={"grant_type": "client_credentials"}, auth=service.basic)
    assert_oauth_error(response, 401, "invalid_client")
    admin_view = await client.post(INTROSPECT, data={"token": token}, headers=admin.headers)
    assert admin_view.json() == {"active": False}


async def test_a_client_token_verifies_with_the_published_key(client: Client, admin: LoggedIn) -> None:
    service = await make_client(client, admin, "users:read")
    token = await client_token(client, service)
    jwks = jwt.PyJWKSet.from_dict((await client.get("/.well-known/jwks.json")).json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience="accounts")
    assert claims["client_id"] == service.client_id
