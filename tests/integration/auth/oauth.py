"""What the OAuth tests share: paths, and service clients made through the API (RFC 6749 errors are checked by
`support.assert_oauth_error`)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tests.integration.auth.support import AUTH, Client, LoggedIn

CLIENTS = "/api/v1/oauth-clients"
INTROSPECT = f"{AUTH}/introspect"
REVOKE = f"{AUTH}/revoke"
USERINFO = f"{AUTH}/userinfo"
AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ServiceClient:
    """A service client made through the API, and the secret it was given."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...]

    @property
    def basic(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.client_id, self.client_secret)


async def make_client(client: Client, admin: LoggedIn, *scopes: str, name: str = "billing") -> ServiceClient:
    created = await client.post(CLIENTS, json={"name": name, "scopes": list(scopes)}, headers=admin.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    return ServiceClient(body["client_id"], body["client_secret"], tuple(sorted(scopes)))


async def client_token(client: Client, service: ServiceClient, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope is not None else {})
    response = await client.post(f"{AUTH}/token", data=form, auth=service.basic)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
