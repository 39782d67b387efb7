"""HTTP endpoints for service clients (admins only): create, list, read, rotate the secret, replace the public keys,
delete."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.clients.models import OAuthClient
from accounts.clients.schemas import (
    ClientJwkSet,
    OAuthClientCreate,
    OAuthClientCreated,
    OAuthClientList,
    OAuthClientRead,
    SecretRotation,
)
from accounts.clients.services import OAuthClientService, to_client_read
from accounts.core.errors import problem_responses
from accounts.core.http.idempotency import IdempotencyMiddleware
from accounts.core.http.media import NegotiatedResponse
from accounts.core.http.openapi import LOCATION_HEADER
from accounts.core.security import AUTHENTICATED, AuthenticatedRequest, requires_admin


def provide_clients(db_session: NamedDependency[AsyncSession], state: State) -> OAuthClientService:
    """Every change (a rotation, new keys, a deletion) forgets the client in this worker's credential cache at once
    (the others hear it from the database)."""
    return OAuthClientService(db_session, on_changed=state.credentials.forget_client)


def with_secret(client: OAuthClient, secret: str) -> OAuthClientCreated:
    """The client and its new secret, the one answer that shows the secret."""
    return OAuthClientCreated(**msgspec.structs.asdict(to_client_read(client)), client_secret=secret)


ClientId = Annotated[UUID, Parameter(description="The client's `client_id`.")]


class OAuthClientController(Controller):
    path = "/oauth-clients"
    tags = ["oauth-clients"]
    guards = [requires_admin]
    security = AUTHENTICATED
    dependencies = {"clients": Provide(provide_clients, sync_to_thread=False)}

    @post(
        name="createOAuthClient",
        middleware=[IdempotencyMiddleware],
        summary="Create a service client (the secret is shown once)",
        description="The client gets tokens with `grant_type=client_credentials` at `POST /api/v1/auth/token`, "
        "authenticating with HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`); with `jwks` "
        "(public keys: OKP Ed25519, EC P-256, RSA of 2048 bits or more; a private member, a symmetric key or a key "
        "given twice is a 400 naming it), also with JWTs it signs (`private_key_jwt`, RFC 7523).",
        status_code=201,
        response_headers=[LOCATION_HEADER],
        responses=problem_responses(400, 401, 403, 413, 415),
    )
    async def create_oauth_client(
        self,
        clients: NamedDependency[OAuthClientService],
        request: AuthenticatedRequest,
        data: JSONBody[OAuthClientCreate],
    ) -> Response[OAuthClientCreated]:
        client, secret = await clients.create_client(data, created_by=request.user.user_id)
        created = with_secret(client, secret)
        location = request.app.route_reverse("getOAuthClient", client_id=str(client.id))
        return NegotiatedResponse(created, status_code=201, headers={"Location": location})

    @get(name="listOAuthClients", summary="List service clients", responses=problem_responses(401, 403))
    async def list_oauth_clients(self, clients: NamedDependency[OAuthClientService]) -> OAuthClientList:
        return OAuthClientList(
            items=[to_client_read(client) for client in await clients.get_many(order_by=[("created_at", True)])]
        )

    @get(
        "/{client_id:str}",
        name="getOAuthClient",
        summary="Read a service client",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def get_oauth_client(
        self, clients: NamedDependency[OAuthClientService], client_id: ClientId
    ) -> OAuthClientRead:
        return to_client_read(await clients.get(client_id))

    @post(
        "/{client_id:str}/secret",
        name="rotateOAuthClientSecret",
        summary="Give a service client a new secret (shown once)",
        description="The current secret keeps working for `overlap_seconds` (`{}` for the default, a day), so the "
        "client can be redeployed with the new one; the secret before it stops at once.",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 413, 415),
    )
    async def rotate_oauth_client_secret(
        self,
        clients: NamedDependency[OAuthClientService],
        client_id: ClientId,
        data: JSONBody[SecretRotation],
    ) -> OAuthClientCreated:
        client, secret = await clients.rotate_secret(client_id, data.overlap_seconds)
        return with_secret(client, secret)

    @put(
        "/{client_id:str}/jwks",
        name="replaceOAuthClientJwks",
        summary="Replace a service client's public keys (private_key_jwt)",
        description="The JWK Set its `private_key_jwt` assertions are verified with from now on, in every worker: "
        'an assertion signed with a key no longer in it is refused at once. `{"keys": []}` removes them all. '
        "Public keys only, as at creation. To rotate without downtime, put the new key beside the old one, move the "
        "client to it, then drop the old.",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 413, 415),
    )
    async def replace_oauth_client_jwks(
        self,
        clients: NamedDependency[OAuthClientService],
        client_id: ClientId,
        data: JSONBody[ClientJwkSet],
    ) -> OAuthClientRead:
        return to_client_read(await clients.replace_keys(client_id, data))

    @delete(
        "/{client_id:str}",
        name="deleteOAuthClient",
        summary="Delete a service client",
        description="Its secrets and every access token issued to it stop working at once, in every worker.",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404),
    )
    async def delete_oauth_client(self, clients: NamedDependency[OAuthClientService], client_id: ClientId) -> None:
        await clients.delete_client(client_id)
