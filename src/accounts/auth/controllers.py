"""HTTP endpoints for signing up, in and out, e-mail verification, password resets, the public keys, and API keys."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body, JSONBody, Parameter
from litestar.response.base import ASGIResponse
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.auth.cache import CredentialCache
from accounts.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    EmailVerification,
    JwkSet,
    PasswordChange,
    PasswordGrant,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
)
from accounts.auth.services import AccountEmails, ApiKeyService, AuthService, to_key_read
from accounts.auth.tokens import AccessTokens
from accounts.config import Settings
from accounts.core.errors import problem_responses
from accounts.core.http.idempotency import IdempotencyMiddleware
from accounts.core.http.media import NegotiatedResponse
from accounts.core.http.openapi import LOCATION_HEADER, NO_DATABASE
from accounts.core.http.preconditions import ETAG_HEADER, etag
from accounts.core.security import (
    AUTHENTICATED,
    PUBLIC,
    AuthenticatedRequest,
    requires_admin,
    requires_user,
)
from accounts.jobs.services import Jobs
from accounts.mail.jobs import enqueue_email
from accounts.users.schemas import UserCreate, UserRead
from accounts.users.services import UserService, to_read

NO_STORE = CacheControlHeader(no_store=True)


def provide_auth_service(
    db_session: NamedDependency[AsyncSession],
    tokens: NamedDependency[AccessTokens],
    settings: NamedDependency[Settings],
    users: NamedDependency[UserService],
    credentials: NamedDependency[CredentialCache],
) -> AuthService:
    return AuthService(db_session, tokens, settings, users, credentials)


def provide_account_emails(
    db_session: NamedDependency[AsyncSession],
    settings: NamedDependency[Settings],
    users: NamedDependency[UserService],
    credentials: NamedDependency[CredentialCache],
) -> AccountEmails:
    return AccountEmails(db_session, settings, users, credentials)


def provide_api_keys(
    db_session: NamedDependency[AsyncSession], credentials: NamedDependency[CredentialCache]
) -> ApiKeyService:
    return ApiKeyService(db_session, credentials)


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]
    dependencies = {
        "auth": Provide(provide_auth_service, sync_to_thread=False),
        "emails": Provide(provide_account_emails, sync_to_thread=False),
    }

    @post(
        "/token",
        opt=PUBLIC,
        name="createToken",
        summary="Log in: OAuth 2.0 password grant",
        description="Form-encoded `grant_type=password&username=<e-mail or username>&password=...`.",
        status_code=200,
        cache_control=NO_STORE,
        responses=problem_responses(400, 401, 415, 429),
    )
    async def create_token(
        self,
        auth: NamedDependency[AuthService],
        request: Request[Any, Any, Any],
        data: Annotated[PasswordGrant, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> TokenPair:
        return await auth.login(data.username, data.password, client_address(request))

    @post(
        "/refresh",
        opt=PUBLIC,
        name="refreshToken",
        summary="Swap a refresh token for a new token pair",
        description="Each refresh token works once; presenting a used one revokes every token of its chain.",
        status_code=200,
        cache_control=NO_STORE,
        responses=problem_responses(400, 401, 415),
    )
    async def refresh_token(self, auth: NamedDependency[AuthService], data: JSONBody[RefreshRequest]) -> TokenPair:
        return await auth.refresh(data.refresh_token)

    @post(
        "/logout",
        opt=PUBLIC,
        name="logOut",
        summary="Revoke a refresh token",
        status_code=204,
        responses=problem_responses(400, 415),
    )
    async def log_out(self, auth: NamedDependency[AuthService], data: JSONBody[RefreshRequest]) -> None:
        await auth.refresh_tokens.revoke(data.refresh_token)

    @post(
        "/logout-all",
        name="logOutEverywhere",
        summary="Revoke every token of the calling user",
        description="Refresh tokens and, at once, access tokens already issued.",
        status_code=204,
        guards=[requires_user],
        security=AUTHENTICATED,
        responses=problem_responses(401, 403),
    )
    async def log_out_everywhere(self, auth: NamedDependency[AuthService], request: AuthenticatedRequest) -> None:
        await auth.log_out_everywhere(request.user.own_user_id)

    @post(
        "/register",
        opt=PUBLIC,
        name="register",
        middleware=[IdempotencyMiddleware],
        summary="Sign up",
        description="Public sign-up; answers 403 when `REGISTRATION_ENABLED=false`. Sends an e-mail whose token "
        "verifies the address (`POST /api/v1/auth/verify-email`).",
        status_code=201,
        response_headers=[LOCATION_HEADER, ETAG_HEADER],
        responses=problem_responses(400, 403, 409, 413, 415),
    )
    async def register(
        self,
        emails: NamedDependency[AccountEmails],
        jobs: NamedDependency[Jobs],
        request: Request[Any, Any, Any],
        data: JSONBody[RegisterRequest],
    ) -> Response[UserRead]:
        created, outbox_id = await emails.sign_up(UserCreate(**msgspec.structs.asdict(data)))
        user = to_read(created)
        headers = {"Location": request.app.route_reverse("getUser", user_id=str(user.id)), "ETag": etag(user.version)}
        # Enqueued after the response, hence after the commit: the worker always finds the message.
        return NegotiatedResponse(
            user, status_code=201, headers=headers, background=BackgroundTask(enqueue_email, jobs, outbox_id)
        )

    @post(
        "/verify-email",
        opt=PUBLIC,
        name="verifyEmail",
        summary="Verify an e-mail address with the token e-mailed to it",
        description="Each token works once, until it expires (`EMAIL_VERIFICATION_TTL`), and only while the "
        "account still has the address it was sent to. Sets the user's `email_verified_at`.",
        status_code=204,
        responses=problem_responses(400, 413, 415),
    )
    async def verify_email(self, emails: NamedDependency[AccountEmails], data: JSONBody[EmailVerification]) -> None:
        await emails.verify_email(data.token)

    @post(
        "/verify-email/resend",
        name="resendVerificationEmail",
        summary="E-mail a new verification link to the calling user's address",
        description="For a user whose address is not verified yet (409 once it is). At most one e-mail per "
        "`EMAIL_VERIFICATION_INTERVAL` seconds, sign-up's included (429 with `Retry-After`); earlier links keep "
        "working until they expire.",
        status_code=202,
        guards=[requires_user],
        security=AUTHENTICATED,
        responses=problem_responses(401, 403, 409, 429),
    )
    async def resend_verification_email(
        self, emails: NamedDependency[AccountEmails], jobs: NamedDependency[Jobs], request: AuthenticatedRequest
    ) -> ASGIResponse:
        outbox_id = await emails.resend_verification(request.user.own_user_id)
        # Enqueued after the response, hence after the commit: the worker always finds the message.
        return ASGIResponse(status_code=202, background=BackgroundTask(enqueue_email, jobs, outbox_id))

    @post(
        "/password-reset",
        opt=PUBLIC,
        name="requestPasswordReset",
        summary="E-mail a password-reset link",
        description="Always 202, whether or not an account has this address, so the answer reveals nothing. "
        "An active account gets an e-mail, at most one per `PASSWORD_RESET_INTERVAL` seconds; only the newest "
        "link works, for `PASSWORD_RESET_TTL` seconds.",
        status_code=202,
        responses=problem_responses(400, 413, 415),
    )
    async def request_password_reset(
        self,
        emails: NamedDependency[AccountEmails],
        jobs: NamedDependency[Jobs],
        data: JSONBody[PasswordResetRequest],
    ) -> ASGIResponse:
        outbox_id = await emails.send_password_reset(data.email)
        # Enqueued after the response: its timing is the same whether or not an e-mail was written.
        background = BackgroundTask(enqueue_email, jobs, outbox_id) if outbox_id is not None else None
        return ASGIResponse(status_code=202, background=background)

    @post(
        "/password-reset/confirm",
        opt=PUBLIC,
        name="confirmPasswordReset",
        summary="Set a new password with the token of a password-reset e-mail",
        description="Each token works once, until it expires. Every refresh and access token of the user is "
        "revoked; log in again with the new password.",
        status_code=204,
        responses=problem_responses(400, 413, 415),
    )
    async def confirm_password_reset(
        self, emails: NamedDependency[AccountEmails], data: JSONBody[PasswordResetConfirm]
    ) -> None:
        await emails.reset_password(data.token, data.new_password)


class PasswordController(Controller):
    """The calling user's own password, where clients look for it: under `/api/v1/users/me`."""

    path = "/users/me/password"
    tags = ["users"]
    security = AUTHENTICATED
    dependencies = {"auth": Provide(provide_auth_service, sync_to_thread=False)}

    @post(
        name="changeMyPassword",
        summary="Change my password",
        description="Needs the current password; logs the user out everywhere (every token is revoked).",
        status_code=204,
        guards=[requires_user],
        responses=problem_responses(400, 401, 403, 413, 415, 429),
    )
    async def change_my_password(
        self, auth: NamedDependency[AuthService], request: AuthenticatedRequest, data: JSONBody[PasswordChange]
    ) -> None:
        await auth.change_password(request.user.own_user_id, data.current_password, data.new_password)


class JwksController(Controller):
    path = "/.well-known/jwks.json"
    tags = ["auth"]

    @get(
        name="getJwks",
        opt={**PUBLIC, **NO_DATABASE},
        summary="The public keys that verify access tokens (JWK Set)",
        cache_control=CacheControlHeader(max_age=300, public=True),
    )
    async def jwks(self, tokens: NamedDependency[AccessTokens]) -> JwkSet:
        return tokens.keys.jwks


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["api-keys"]
    guards = [requires_admin]
    security = AUTHENTICATED
    dependencies = {"api_keys": Provide(provide_api_keys, sync_to_thread=False)}

    @post(
        name="createApiKey",
        middleware=[IdempotencyMiddleware],
        summary="Create an API key (the secret is shown once)",
        status_code=201,
        response_headers=[LOCATION_HEADER],
        responses=problem_responses(400, 401, 403, 413, 415),
    )
    async def create_api_key(
        self, api_keys: NamedDependency[ApiKeyService], request: AuthenticatedRequest, data: JSONBody[ApiKeyCreate]
    ) -> Response[ApiKeyCreated]:
        key, secret = await api_keys.create_key(data, created_by=request.user.user_id)
        created = ApiKeyCreated(**msgspec.structs.asdict(to_key_read(key)), key=secret)
        location = request.app.route_reverse(
            "revokeApiKey", key_id=str(key.id)
        )  # the key's own URL (it is only deleted)
        return NegotiatedResponse(created, status_code=201, headers={"Location": location})

    @get(name="listApiKeys", summary="List API keys", responses=problem_responses(401, 403))
    async def list_api_keys(self, api_keys: NamedDependency[ApiKeyService]) -> ApiKeyList:
        keys = await api_keys.get_many(order_by=[("created_at", True)])
        return ApiKeyList(items=[to_key_read(key) for key in keys])

    @delete(
        "/{key_id:str}",
        name="revokeApiKey",
        summary="Revoke an API key",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404),
    )
    async def revoke_api_key(
        self,
        api_keys: NamedDependency[ApiKeyService],
        key_id: Annotated[UUID, Parameter(description="The API key's id.")],
    ) -> None:
        await api_keys.revoke_key(key_id)
