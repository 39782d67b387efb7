"""HTTP endpoints for passkeys: a user registers, lists, renames and deletes their own (`/api/v1/users/me/passkeys`);
admins list and delete anyone's (`/api/v1/users/{user_id}/passkeys`). Signing in with one is the token endpoint's."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.core.errors import problem_responses
from accounts.core.http.idempotency import IdempotencyMiddleware
from accounts.core.http.media import NegotiatedResponse
from accounts.core.http.openapi import LOCATION_HEADER
from accounts.core.security import AUTHENTICATED, AuthenticatedRequest, requires_admin, requires_user
from accounts.jobs.services import Jobs
from accounts.mail.jobs import enqueue_email
from accounts.passkeys.schemas import PasskeyList, PasskeyOptions, PasskeyRead, PasskeyRegistration, PasskeyUpdate
from accounts.passkeys.services import PasskeyService, to_passkey_read


def provide_passkeys(db_session: NamedDependency[AsyncSession], state: State) -> PasskeyService:
    return PasskeyService(db_session, state.settings, state.users)


# Declared `str` in the path so a malformed id is a 400 naming the parameter, not an unmatched route (404).
PasskeyId = Annotated[UUID, Parameter(description="The passkey's id (a UUID).")]
UserId = Annotated[UUID, Parameter(description="The user's id (a UUID).")]


def deleted(jobs: Jobs, outbox_id: UUID) -> Response[None]:
    """204, and the security e-mail enqueued after the response, hence after the commit (the worker finds it)."""
    return Response(None, status_code=204, background=BackgroundTask(enqueue_email, jobs, outbox_id))


class PasskeyController(Controller):
    path = "/users"
    tags = ["passkeys"]
    security = AUTHENTICATED
    dependencies = {"passkeys": Provide(provide_passkeys, sync_to_thread=False)}

    @post(
        "/me/passkeys/registration-options",
        name="startPasskeyRegistration",
        summary="Begin registering a passkey: the options for the browser",
        description="Pass `options` to `navigator.credentials.create()` (through "
        "`PublicKeyCredential.parseCreationOptionsFromJSON`), then send the answer (`credential.toJSON()`) to "
        "`registerPasskey` with `challenge_id` within WEBAUTHN_CHALLENGE_TTL seconds. The options ask for a "
        "discoverable credential (it can sign in without a username), prefer user verification, and exclude the "
        "caller's passkeys.",
        status_code=200,
        guards=[requires_user],
        responses=problem_responses(401, 403),
    )
    async def start_passkey_registration(
        self, passkeys: NamedDependency[PasskeyService], request: AuthenticatedRequest
    ) -> PasskeyOptions:
        challenge_id, options = await passkeys.registration_options(request.user.own_user_id)
        return PasskeyOptions(challenge_id=challenge_id, options=options)

    @post(
        "/me/passkeys",
        name="registerPasskey",
        middleware=[IdempotencyMiddleware],
        summary="Register a passkey: the browser's answer to the registration options",
        description="Verifies the answer (challenge, origin, relying party, attestation statement) and keeps the "
        "passkey; the user is told by e-mail. Each challenge works once: 400 naming `challenge_id` when it is "
        "unknown, expired or used, and naming the field of `credential` that does not verify.",
        status_code=201,
        guards=[requires_user],
        response_headers=[LOCATION_HEADER],
        responses=problem_responses(400, 401, 403, 409, 413, 415),
    )
    async def register_passkey(
        self,
        passkeys: NamedDependency[PasskeyService],
        jobs: NamedDependency[Jobs],
        request: AuthenticatedRequest,
        data: JSONBody[PasskeyRegistration],
    ) -> Response[PasskeyRead]:
        passkey, outbox_id = await passkeys.register(request.user.own_user_id, data)
        location = request.app.route_reverse("getMyPasskey", passkey_id=str(passkey.id))
        return NegotiatedResponse(
            to_passkey_read(passkey),
            status_code=201,
            headers={"Location": location},
            background=BackgroundTask(enqueue_email, jobs, outbox_id),
        )

    @get(
        "/me/passkeys",
        name="listMyPasskeys",
        summary="List my passkeys",
        guards=[requires_user],
        responses=problem_responses(401, 403),
    )
    async def list_my_passkeys(
        self, passkeys: NamedDependency[PasskeyService], request: AuthenticatedRequest
    ) -> PasskeyList:
        return PasskeyList(items=[to_passkey_read(p) for p in await passkeys.list_for(request.user.own_user_id)])

    @get(
        "/me/passkeys/{passkey_id:str}",
        name="getMyPasskey",
        summary="Read one of my passkeys",
        guards=[requires_user],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def get_my_passkey(
        self, passkeys: NamedDependency[PasskeyService], request: AuthenticatedRequest, passkey_id: PasskeyId
    ) -> PasskeyRead:
        return to_passkey_read(await passkeys.get_for(request.user.own_user_id, passkey_id))

    @patch(
        "/me/passkeys/{passkey_id:str}",
        name="renameMyPasskey",
        summary="Rename one of my passkeys",
        guards=[requires_user],
        responses=problem_responses(400, 401, 403, 404, 413, 415),
    )
    async def rename_my_passkey(
        self,
        passkeys: NamedDependency[PasskeyService],
        request: AuthenticatedRequest,
        passkey_id: PasskeyId,
        data: JSONBody[PasskeyUpdate],
    ) -> PasskeyRead:
        return to_passkey_read(await passkeys.rename(request.user.own_user_id, passkey_id, data.name))

    @delete(
        "/me/passkeys/{passkey_id:str}",
        name="deleteMyPasskey",
        summary="Delete one of my passkeys",
        description="It stops signing in at once; the user is told by e-mail.",
        status_code=204,
        guards=[requires_user],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def delete_my_passkey(
        self,
        passkeys: NamedDependency[PasskeyService],
        jobs: NamedDependency[Jobs],
        request: AuthenticatedRequest,
        passkey_id: PasskeyId,
    ) -> Response[None]:
        return deleted(jobs, await passkeys.remove(request.user.own_user_id, passkey_id))

    @get(
        "/{user_id:str}/passkeys",
        name="listUserPasskeys",
        summary="List a user's passkeys (admins)",
        guards=[requires_admin],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def list_user_passkeys(self, passkeys: NamedDependency[PasskeyService], user_id: UserId) -> PasskeyList:
        return PasskeyList(items=[to_passkey_read(p) for p in await passkeys.list_of_user(user_id)])

    @delete(
        "/{user_id:str}/passkeys/{passkey_id:str}",
        name="deleteUserPasskey",
        summary="Delete a user's passkey (admins)",
        description="It stops signing in at once; the user is told by e-mail.",
        status_code=204,
        guards=[requires_admin],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def delete_user_passkey(
        self,
        passkeys: NamedDependency[PasskeyService],
        jobs: NamedDependency[Jobs],
        user_id: UserId,
        passkey_id: PasskeyId,
    ) -> Response[None]:
        return deleted(jobs, await passkeys.remove(user_id, passkey_id))
