"""HTTP endpoints of the calling user's second factors, under `/api/v1/users/me/mfa`."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import CacheControlHeader, State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.core.errors import problem_responses
from accounts.core.http.media import NegotiatedResponse
from accounts.core.security import AUTHENTICATED, AuthenticatedRequest, requires_user
from accounts.jobs.services import Jobs
from accounts.mail.jobs import enqueue_email
from accounts.mfa.schemas import FactorProof, RecoveryCodes, SecondFactors, TotpConfirmation, TotpEnrolment
from accounts.mfa.services import SecondFactorService
from accounts.users.models import User

NO_STORE = CacheControlHeader(no_store=True)


def provide_second_factors(db_session: NamedDependency[AsyncSession], state: State) -> SecondFactorService:
    return SecondFactorService(db_session, state.sealer, state.settings)


def _send(jobs: Jobs, outbox_id: UUID) -> BackgroundTask:
    """Enqueue the security notice after the response, hence after the commit: the worker always finds it."""
    return BackgroundTask(enqueue_email, jobs, outbox_id)


class SecondFactorController(Controller):
    path = "/users/me/mfa"
    tags = ["mfa"]
    guards = [requires_user]
    security = AUTHENTICATED
    dependencies = {"factors": Provide(provide_second_factors, sync_to_thread=False)}

    async def _me(self, factors: SecondFactorService, request: AuthenticatedRequest) -> User:
        users = request.app.state.users
        user: User = await users.row(factors.session, request.user.own_user_id)
        return user

    @get(
        name="getMySecondFactors",
        summary="My second factors",
        description="Whether an authenticator app (TOTP) is on, and how many recovery codes are left.",
        cache_control=NO_STORE,
        responses=problem_responses(401, 403),
    )
    async def get_my_factors(
        self, factors: NamedDependency[SecondFactorService], request: AuthenticatedRequest
    ) -> SecondFactors:
        return await factors.status(request.user.own_user_id)

    @post(
        "/totp",
        name="enrolTotp",
        summary="Start setting up an authenticator app (TOTP, RFC 6238)",
        description="A new secret and its `otpauth://` URI (for a QR code), shown once. Nothing changes at login until "
        "a first code confirms it (`confirmTotp`); asking again replaces a secret not yet confirmed. 409 when an "
        "authenticator is on already.",
        status_code=200,
        cache_control=NO_STORE,
        responses=problem_responses(401, 403, 409),
    )
    async def enrol_totp(
        self, factors: NamedDependency[SecondFactorService], request: AuthenticatedRequest
    ) -> TotpEnrolment:
        return await factors.enrol_totp(await self._me(factors, request))

    @post(
        "/totp/confirm",
        name="confirmTotp",
        summary="Switch the authenticator app on with its first code",
        description="From now on a password login asks for a code too. Answers ten single-use recovery codes, shown "
        "once; an e-mail tells the user.",
        status_code=200,
        cache_control=NO_STORE,
        responses=problem_responses(400, 401, 403, 404, 413, 415),
    )
    async def confirm_totp(
        self,
        factors: NamedDependency[SecondFactorService],
        jobs: NamedDependency[Jobs],
        request: AuthenticatedRequest,
        data: JSONBody[TotpConfirmation],
    ) -> Response[RecoveryCodes]:
        codes, notice = await factors.confirm_totp(await self._me(factors, request), data.code)
        return NegotiatedResponse(RecoveryCodes(recovery_codes=codes), background=_send(jobs, notice))

    @post(
        "/totp/disable",
        name="disableTotp",
        summary="Turn the authenticator app off",
        description="Needs the password and a current code or an unused recovery code (wrong ones count against the "
        "account's failed-login limit). The recovery codes go too; an e-mail tells the user.",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404, 413, 415, 429),
    )
    async def disable_totp(
        self,
        factors: NamedDependency[SecondFactorService],
        jobs: NamedDependency[Jobs],
        request: AuthenticatedRequest,
        data: JSONBody[FactorProof],
    ) -> Response[None]:
        user = await self._me(factors, request)
        await factors.prove(user, data, request.app.state.limits)
        notice = await factors.remove_totp(user)
        return Response(None, status_code=204, background=_send(jobs, notice))

    @post(
        "/recovery-codes",
        name="renewRecoveryCodes",
        summary="Make new recovery codes (the old ones stop working)",
        description="Needs the password and a current code or an unused recovery code, as turning TOTP off does.",
        status_code=200,
        cache_control=NO_STORE,
        responses=problem_responses(400, 401, 403, 404, 413, 415, 429),
    )
    async def renew_recovery_codes(
        self,
        factors: NamedDependency[SecondFactorService],
        jobs: NamedDependency[Jobs],
        request: AuthenticatedRequest,
        data: JSONBody[FactorProof],
    ) -> Response[RecoveryCodes]:
        user = await self._me(factors, request)
        await factors.prove(user, data, request.app.state.limits)
        codes, notice = await factors.renew_recovery_codes(user)
        return NegotiatedResponse(RecoveryCodes(recovery_codes=codes), background=_send(jobs, notice))
