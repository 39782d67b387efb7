"""HTTP endpoints for signing up, in and out, the OAuth 2.0 token, introspection and revocation endpoints, userinfo,
e-mail verification, password resets, the public keys, the discovery documents, and API keys."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import unquote_plus
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import CacheControlHeader, State
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, JSONBody, Parameter
from litestar.response.base import ASGIResponse
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.auth.assertions import ASSERTION_TYPE
from accounts.auth.authentication import Authenticator
from accounts.auth.cache import ClientState
from accounts.auth.models import UserSession
from accounts.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    EmailVerification,
    JwkSet,
    MfaRequired,
    PasskeyLogin,
    PasskeyLoginStart,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    ServerMetadata,
    SessionList,
    SessionRead,
    TokenIntrospection,
    TokenIntrospectionRequest,
    TokenPair,
    TokenRequest,
    TokenResponse,
    TokenRevocationRequest,
    UserInfo,
)
from accounts.auth.services import (
    AccountEmails,
    ApiKeyService,
    AuthService,
    ClientCredentialsGrant,
    Device,
    InvalidClient,
    MfaChallengeIssued,
    SignedIn,
    introspect_access_token,
    to_key_read,
)
from accounts.auth.sessions import SessionService
from accounts.auth.tokens import ALGORITHM, AccessTokens
from accounts.clients.keys import ASSERTION_ALGORITHMS
from accounts.config import Settings
from accounts.core.db import transaction
from accounts.core.errors import (
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    UnsupportedGrantType,
    oauth_error_responses,
    oauth_exception_handlers,
    problem_responses,
)
from accounts.core.http.idempotency import IdempotencyMiddleware
from accounts.core.http.media import DirectResponse, NegotiatedResponse
from accounts.core.http.openapi import LOCATION_HEADER, NO_DATABASE
from accounts.core.http.preconditions import ETAG_HEADER, etag
from accounts.core.security import (
    ADMIN_SCOPES,
    AUTHENTICATED,
    PUBLIC,
    AuthenticatedRequest,
    requires_admin,
    requires_user,
)
from accounts.jobs.services import Jobs
from accounts.mail.jobs import enqueue_email
from accounts.passkeys.schemas import PasskeyOptions
from accounts.users.schemas import UserCreate, UserRead
from accounts.users.services import UserService

NO_STORE = CacheControlHeader(no_store=True)
TOKEN_HEADERS = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
"""What every answer holding tokens sends (RFC 6749 section 5.1): no cache may keep it."""
TOKENS_ISSUED = ResponseSpec(TokenResponse, description="The tokens (RFC 6749 section 5.1)", generate_examples=False)


# Providers take the app's State rather than each shared object by name: one dependency to resolve instead of five
# (Litestar resolves several at once in a task group, ~40 us a request).
def provide_auth_service(db_session: NamedDependency[AsyncSession], state: State) -> AuthService:
    return AuthService(
        db_session,
        tokens=state.tokens,
        settings=state.settings,
        users=state.users,
        credentials=state.credentials,
        sealer=state.sealer,
        limits=state.limits,
    )


def provide_account_emails(db_session: NamedDependency[AsyncSession], state: State) -> AccountEmails:
    return AccountEmails(
        db_session, settings=state.settings, users=state.users, credentials=state.credentials, limits=state.limits
    )


def provide_api_keys(db_session: NamedDependency[AsyncSession], state: State) -> ApiKeyService:
    return ApiKeyService(db_session, state.credentials)


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def device(request: Request[Any, Any, Any]) -> Device:
    """Where the request comes from, as a session remembers it (a user agent cut to what the column holds)."""
    return Device(user_agent=request.headers.get("user-agent", "")[:512] or None, address=client_address(request))


def tokens_response(
    request: Request[Any, Any, Any],
    tokens: TokenResponse | MfaRequired | TokenIntrospection,
    *,
    status: int = 200,
    background: BackgroundTask | None = None,
) -> DirectResponse:
    """An answer holding tokens or what they say, uncacheable (TOKEN_HEADERS)."""
    return DirectResponse.negotiated(tokens, request.scope, status=status, headers=TOKEN_HEADERS, background=background)


def signed_in(request: Request[Any, Any, Any], result: SignedIn | MfaChallengeIssued) -> DirectResponse:
    """A login's answer: its tokens (and the new-device notice enqueued after the commit), or the `mfa_required`
    challenge (403, as Auth0's MFA grant has it)."""
    if isinstance(result, MfaChallengeIssued):
        detail = "The password was right; this account also needs a second factor to log in."
        body = MfaRequired(
            type="/problems/mfa-required",
            title="Forbidden",
            status=403,
            detail=detail,
            error="mfa_required",
            error_description=detail,
            mfa_token=result.mfa_token,
            expires_in=result.expires_in,
            mfa_methods=result.methods,
        )
        return tokens_response(request, body, status=403)
    background = BackgroundTask(enqueue_email, request.app.state.jobs, result.notice) if result.notice else None
    return tokens_response(request, TokenResponse(**msgspec.structs.asdict(result.tokens)), background=background)


MFA_OTP = "http://auth0.com/oauth/grant-type/mfa-otp"
MFA_RECOVERY_CODE = "http://auth0.com/oauth/grant-type/mfa-recovery-code"
GRANT_TYPES = ("password", "refresh_token", "client_credentials", MFA_OTP, MFA_RECOVERY_CODE)
INTROSPECT = "tokens:introspect"


def required(data: TokenRequest, field: str) -> str:
    """A form field the grant needs."""
    value: str = getattr(data, field)
    if not value:
        message = f"required with grant_type={data.grant_type}"
        raise InvalidInput(f"{field}: {message}", errors=[FieldError(field=field, message=message)])
    return value


def client_credentials(request: Request[Any, Any, Any], form_id: str, form_secret: str) -> tuple[str, str] | None:
    """The client's id and secret, from HTTP Basic (`client_secret_basic`) or the form (`client_secret_post`) as
    RFC 6749 section 2.3.1 has them; None when the request authenticates no client (a `client_id` alone is a public
    client's name, which proves nothing)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return (form_id, form_secret) if form_secret else None
    if form_secret:
        raise InvalidInput("Authenticate the client one way: HTTP Basic, or client_id and client_secret; not both.")
    try:
        client_id, colon, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("The Authorization header is not valid HTTP Basic.") from None
    if not colon:
        raise InvalidClient("The Authorization header is not valid HTTP Basic.")
    return unquote_plus(client_id), unquote_plus(secret)  # form-encoded before they were joined (section 2.3.1)


async def authenticated_client(
    request: Request[Any, Any, Any], form: TokenRequest | TokenIntrospectionRequest
) -> ClientState | None:
    """The service client the request authenticates, by one method (RFC 6749 section 2.3): its secret (HTTP Basic or
    the form) or a `private_key_jwt` assertion (RFC 7523 section 2.2); None when it authenticates none."""
    grant: ClientCredentialsGrant = request.app.state.client_credentials
    secret = client_credentials(request, form.client_id, form.client_secret)
    if not (form.client_assertion or form.client_assertion_type):
        return await grant.authenticate(*secret) if secret is not None else None
    if secret is not None:
        raise InvalidInput("Authenticate the client one way: its secret (HTTP Basic or form) or a client_assertion.")
    for field in ("client_assertion_type", "client_assertion"):
        if not getattr(form, field):
            message = "required to authenticate with a client assertion"
            raise InvalidInput(f"{field}: {message}", errors=[FieldError(field=field, message=message)])
    if form.client_assertion_type != ASSERTION_TYPE:
        raise InvalidClient(f"client_assertion_type: only {ASSERTION_TYPE} is supported.")
    # The issuer or the token endpoint (RFC 7523 section 3, OpenID Connect Core section 9); also the URL it was sent
    # to, authlib's default audience.
    routes = {"createToken", request.route_handler.name or "createToken"}
    settings: Settings = request.app.state.settings
    audiences = sorted({settings.issuer, *(endpoint_url(settings, request, route) for route in routes)})
    return await grant.authenticate_assertion(form.client_assertion, form.client_id, audiences)


def endpoint_url(settings: Settings, request: Request[Any, Any, Any], route: str) -> str:
    """The URL of the operation `route` under PUBLIC_URL, as the discovery documents name it."""
    return settings.public_url.rstrip("/") + request.app.route_reverse(route)


async def user_grant(auth: AuthService, request: Request[Any, Any, Any], data: TokenRequest) -> DirectResponse:
    """The token endpoint's grants of users' tokens: password, refresh token, and the second step of a login."""
    if data.grant_type == "refresh_token":
        pair = await auth.refresh(required(data, "refresh_token"))
        return tokens_response(request, TokenResponse(**msgspec.structs.asdict(pair)))
    if data.grant_type == "password":
        login = await auth.login(required(data, "username"), required(data, "password"), device(request))
        return signed_in(request, login)
    if data.grant_type in {MFA_OTP, MFA_RECOVERY_CODE}:
        method, field = ("otp", "otp") if data.grant_type == MFA_OTP else ("recovery_code", "recovery_code")
        login = await auth.complete_login(required(data, "mfa_token"), method, required(data, field), device(request))
        return signed_in(request, login)
    raise UnsupportedGrantType(
        f"grant_type: {data.grant_type!r} is not one of {', '.join(GRANT_TYPES)}",
        errors=[FieldError(field="grant_type", message=f"expected one of {', '.join(GRANT_TYPES)}")],
    )


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
        exception_handlers=oauth_exception_handlers,
        summary="Get tokens: OAuth 2.0 password, refresh-token and client-credentials grants",
        description="Form-encoded (RFC 6749). `grant_type=password&username=<e-mail or username>&password=...` "
        "logs a user in; `grant_type=refresh_token&refresh_token=...` renews a user's tokens; "
        "`grant_type=client_credentials` (with an optional space-separated `scope`) gives a service client a token "
        "of its own, the client authenticating with HTTP Basic (`client_secret_basic`), `client_id` and "
        "`client_secret` form fields (`client_secret_post`), or `client_assertion_type="
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a `client_assertion` JWT signed with a key it "
        "registered (`private_key_jwt`, RFC 7523). A user with a second factor gets 403 `mfa_required` "
        "and an `mfa_token` from the password grant; "
        "`grant_type=http://auth0.com/oauth/grant-type/mfa-otp&mfa_token=...&otp=...` (or `.../mfa-recovery-code` "
        "with `recovery_code`) then gives the tokens. Errors are RFC 6749 section 5.2 JSON (`error`, "
        "`error_description`): 400, but 401 `invalid_client` for a failed client authentication.",
        status_code=200,
        responses={
            200: TOKENS_ISSUED,
            **oauth_error_responses(400, 401, 408, 413, 415, 429, 503),
            403: ResponseSpec(
                data_container=MfaRequired,
                description="The password was right and a second factor is needed: `mfa_required` with an `mfa_token`",
                media_type="application/json",
                generate_examples=False,
            ),
        },
    )
    async def create_token(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[TokenRequest, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> DirectResponse:
        if data.grant_type == "client_credentials":  # no database: no session to make
            client = await authenticated_client(request, data)
            if client is None:
                raise InvalidClient(
                    "Authenticate the client: HTTP Basic, client_id and client_secret, or a client_assertion."
                )
            grant: ClientCredentialsGrant = request.app.state.client_credentials
            return tokens_response(request, grant.grant(client, data.scope))
        async with transaction(request) as session:
            return await user_grant(provide_auth_service(session, request.app.state), request, data)

    @post(
        "/passkey/options",
        opt=PUBLIC,
        name="startPasskeyLogin",
        summary="Start a passkey login (WebAuthn)",
        description="Without a body field, a passwordless, usernameless login: `options` (for "
        "`navigator.credentials.get`) list no credentials, so the browser offers the passkeys it holds for this "
        "site, and user verification is required. With the `mfa_token` of an `mfa_required` answer, the second step "
        "of that password login: the options list the user's passkeys. The challenge works once, for "
        "`WEBAUTHN_CHALLENGE_TTL` seconds.",
        status_code=200,
        cache_control=NO_STORE,
        responses=problem_responses(400, 401, 413, 415),
    )
    async def start_passkey_login(
        self, auth: NamedDependency[AuthService], data: JSONBody[PasskeyLoginStart]
    ) -> PasskeyOptions:
        mfa_token = data.mfa_token if isinstance(data.mfa_token, str) else None
        challenge_id, options = await auth.passkey_options(mfa_token)
        return PasskeyOptions(challenge_id=challenge_id, options=options)

    @post(
        "/passkey/login",
        opt=PUBLIC,
        name="logInWithPasskey",
        summary="Finish a passkey login: the tokens",
        description='The browser\'s answer to `startPasskeyLogin`\'s options. Tokens say `amr` `["hwk", "user", '
        '"mfa"]` (passwordless) or `["pwd", "hwk", "mfa"]` (a second factor). A passkey that does not '
        "verify (another site, a used challenge, a signature counter that went back: a cloned authenticator) is a "
        "401 that counts against the failed-login limits, as a wrong password does.",
        status_code=200,
        responses={200: TOKENS_ISSUED, **problem_responses(400, 401, 413, 415, 429)},
    )
    async def log_in_with_passkey(
        self, auth: NamedDependency[AuthService], request: Request[Any, Any, Any], data: JSONBody[PasskeyLogin]
    ) -> DirectResponse:
        mfa_token = data.mfa_token if isinstance(data.mfa_token, str) else None
        login = await auth.passkey_login(data.challenge_id, data.credential, mfa_token, device(request))
        return signed_in(request, login)

    @post(
        "/introspect",
        opt=PUBLIC,
        name="introspectToken",
        exception_handlers=oauth_exception_handlers,
        summary="Introspect a token (RFC 7662)",
        description="For a service client holding `tokens:introspect` (authenticated as at the token endpoint) or "
        'an API key or token with that scope. `{"active": true, ...claims}` for an access or refresh token that '
        'works now; `{"active": false}` for one that is expired, revoked, unknown, malformed, or whose user was '
        "deactivated, changed password or logged out everywhere, or whose client was deleted.",
        status_code=200,
        responses={
            200: ResponseSpec(
                TokenIntrospection, description="What the token is, if it works (RFC 7662)", generate_examples=False
            ),
            **oauth_error_responses(400, 401, 408, 413, 415, 503),
        },
    )
    async def introspect_token(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[TokenIntrospectionRequest, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> DirectResponse:
        client = await authenticated_client(request, data)
        if client is not None:
            scopes = client.scopes
        elif request.headers.get("authorization") or request.headers.get("x-api-key"):
            authenticator: Authenticator = request.app.state.authenticator
            caller = await authenticator.authenticate(
                request.headers.get("authorization") or None, request.headers.get("x-api-key") or None
            )
            scopes = caller.scopes
        else:
            raise InvalidClient("Authenticate: as a service client (as at the token endpoint), or with an API key.")
        if INTROSPECT not in scopes:
            raise Forbidden(f"Introspection needs the `{INTROSPECT}` scope.")
        state = request.app.state
        found = await introspect_access_token(state.tokens, state.credentials, data.token)
        if found is None:  # not an access token; those need no database, so no session is made for them
            async with transaction(request) as session:
                found = await provide_auth_service(session, state).introspect_refresh_token(data.token)
        return tokens_response(request, found)

    @post(
        "/revoke",
        opt=PUBLIC,
        name="revokeToken",
        exception_handlers=oauth_exception_handlers,
        summary="Revoke a token (RFC 7009)",
        description="A refresh token is revoked with every token of its rotation chain; an access token (by its "
        "`jti`) is refused at once by every endpoint and by introspection until it expires. A user's tokens need no "
        "client authentication (holding the token is enough); a service client's only with that client's. 200 for "
        "every well-formed request, whether or not the token was known (RFC 7009 section 2.2).",
        status_code=200,
        responses=oauth_error_responses(400, 401, 408, 413, 415, 503),
    )
    async def revoke_token(
        self,
        auth: NamedDependency[AuthService],
        request: Request[Any, Any, Any],
        data: Annotated[TokenRevocationRequest, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> ASGIResponse:
        await auth.revoke(data.token, await authenticated_client(request, data))
        return ASGIResponse(status_code=200, headers={"Cache-Control": "no-store"})

    @get(
        "/userinfo",
        name="getUserInfo",
        summary="The calling user's standard claims (OpenID Connect userinfo)",
        guards=[requires_user],
        security=AUTHENTICATED,
        responses=problem_responses(401, 403),
    )
    async def user_info(self, users: NamedDependency[UserService], request: AuthenticatedRequest) -> UserInfo:
        user = await users.get(request.user.own_user_id)
        return UserInfo(
            sub=str(user.id),
            email=user.email,
            email_verified=user.email_verified_at is not None,
            preferred_username=user.username,
            name=user.full_name if user.full_name else msgspec.UNSET,
            updated_at=int(user.updated_at.timestamp()),
        )

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
        summary="End the session of a refresh token",
        description="Its refresh tokens stop working, and so, at once, do the access tokens issued in it.",
        status_code=204,
        responses=problem_responses(400, 415),
    )
    async def log_out(self, auth: NamedDependency[AuthService], data: JSONBody[RefreshRequest]) -> None:
        await auth.sessions.end_by_token(data.refresh_token)

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
        user, outbox_id = await emails.sign_up(UserCreate(**msgspec.structs.asdict(data)))
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
        self, emails: NamedDependency[AccountEmails], jobs: NamedDependency[Jobs], data: JSONBody[PasswordResetConfirm]
    ) -> Response[None]:
        notice = await emails.reset_password(data.token, data.new_password)
        return Response(None, status_code=204, background=BackgroundTask(enqueue_email, jobs, notice))


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
        self,
        auth: NamedDependency[AuthService],
        jobs: NamedDependency[Jobs],
        request: AuthenticatedRequest,
        data: JSONBody[PasswordChange],
    ) -> Response[None]:
        notice = await auth.change_password(request.user.own_user_id, data.current_password, data.new_password)
        return Response(None, status_code=204, background=BackgroundTask(enqueue_email, jobs, notice))


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


class DiscoveryController(Controller):
    """Where OAuth 2.0 and OpenID Connect libraries find the endpoints and keys: RFC 8414 and OIDC Discovery."""

    path = "/.well-known"
    tags = ["auth"]

    @get(
        "/oauth-authorization-server",
        name="getAuthorizationServerMetadata",
        opt={**PUBLIC, **NO_DATABASE},
        summary="OAuth 2.0 authorization server metadata (RFC 8414)",
        cache_control=CacheControlHeader(max_age=300, public=True),
    )
    async def authorization_server(
        self, settings: NamedDependency[Settings], request: Request[Any, Any, Any]
    ) -> ServerMetadata:
        return server_metadata(settings, request)

    @get(
        "/openid-configuration",
        name="getOpenIdConfiguration",
        opt={**PUBLIC, **NO_DATABASE},
        summary="OpenID Provider configuration (OpenID Connect Discovery 1.0)",
        cache_control=CacheControlHeader(max_age=300, public=True),
    )
    async def openid_configuration(
        self, settings: NamedDependency[Settings], request: Request[Any, Any, Any]
    ) -> ServerMetadata:
        return server_metadata(settings, request)


def server_metadata(settings: Settings, request: Request[Any, Any, Any]) -> ServerMetadata:
    """One document for both addresses: the endpoints at PUBLIC_URL, the issuer every token carries."""

    def url(route: str) -> str:
        return endpoint_url(settings, request, route)

    client_auth = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
    signing = list(ASSERTION_ALGORITHMS)
    return ServerMetadata(
        issuer=settings.issuer,
        token_endpoint=url("createToken"),
        jwks_uri=url("getJwks"),
        introspection_endpoint=url("introspectToken"),
        revocation_endpoint=url("revokeToken"),
        userinfo_endpoint=url("getUserInfo"),
        grant_types_supported=list(GRANT_TYPES),
        token_endpoint_auth_methods_supported=client_auth,
        token_endpoint_auth_signing_alg_values_supported=signing,
        introspection_endpoint_auth_methods_supported=client_auth,
        introspection_endpoint_auth_signing_alg_values_supported=signing,
        revocation_endpoint_auth_methods_supported=[*client_auth, "none"],
        revocation_endpoint_auth_signing_alg_values_supported=signing,
        scopes_supported=sorted(ADMIN_SCOPES),
        response_types_supported=["none"],  # no authorization endpoint: nothing is answered through one
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=[ALGORITHM],
        claims_supported=["sub", "email", "email_verified", "preferred_username", "name", "updated_at"],
        service_documentation=settings.public_url.rstrip("/") + "/schema",
    )


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


def provide_sessions(db_session: NamedDependency[AsyncSession], state: State) -> SessionService:
    return SessionService(db_session, state.credentials)


UserIdPath = Annotated[UUID, Parameter(description="The user's id.")]


SessionId = Annotated[UUID, Parameter(description="The session's id.")]


def _session_list(sessions: list[UserSession], current: UUID | None) -> SessionList:
    return SessionList(
        items=[
            SessionRead(
                id=each.id,
                created_at=each.created_at,
                last_used_at=each.last_used_at,
                user_agent=each.user_agent,
                address=each.address,
                amr=list(each.amr),
                current=each.id == current,
            )
            for each in sessions
        ]
    )


class SessionController(Controller):
    """Sessions (one per login): the user's own under `/users/me/sessions`, anyone's for admins; and an admin's reset
    of a user's second factors."""

    path = "/users"
    tags = ["sessions"]
    security = AUTHENTICATED
    dependencies = {
        "sessions": Provide(provide_sessions, sync_to_thread=False),
        "auth": Provide(provide_auth_service, sync_to_thread=False),
    }

    @delete(
        "/{user_id:str}/mfa",
        name="resetUserSecondFactors",
        summary="Remove a user's second factors (admins)",
        description="For a user who lost their authenticator: TOTP and recovery codes are removed, so the next login "
        "needs the password alone. The user gets an e-mail saying so.",
        status_code=204,
        tags=["mfa"],
        guards=[requires_admin],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def reset_user_second_factors(
        self, auth: NamedDependency[AuthService], jobs: NamedDependency[Jobs], user_id: UserIdPath
    ) -> Response[None]:
        notice = await auth.reset_second_factors(user_id)
        return Response(None, status_code=204, background=BackgroundTask(enqueue_email, jobs, notice))

    @get(
        "/me/sessions",
        name="listMySessions",
        summary="My sessions",
        description="Every login whose refresh token still works, most recently used first; `current` marks the one "
        "the calling token belongs to.",
        guards=[requires_user],
        cache_control=NO_STORE,
        responses=problem_responses(401, 403),
    )
    async def list_my_sessions(
        self, sessions: NamedDependency[SessionService], request: AuthenticatedRequest
    ) -> SessionList:
        return _session_list(await sessions.live(request.user.own_user_id), request.user.session_id)

    @delete(
        "/me/sessions/{session_id:str}",
        name="endMySession",
        summary="End one of my sessions",
        description="Its refresh tokens stop working and, at once, its access tokens (the caller's own session too).",
        status_code=204,
        guards=[requires_user],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def end_my_session(
        self, sessions: NamedDependency[SessionService], request: AuthenticatedRequest, session_id: SessionId
    ) -> None:
        if not await sessions.end(request.user.own_user_id, session_id):
            raise NotFound("You have no live session with this id.")

    @get(
        "/{user_id:str}/sessions",
        name="listUserSessions",
        summary="A user's sessions (admins)",
        guards=[requires_admin],
        cache_control=NO_STORE,
        responses=problem_responses(400, 401, 403),
    )
    async def list_user_sessions(
        self,
        sessions: NamedDependency[SessionService],
        request: AuthenticatedRequest,
        user_id: UserIdPath,
    ) -> SessionList:
        return _session_list(await sessions.live(user_id), request.user.session_id)

    @delete(
        "/{user_id:str}/sessions/{session_id:str}",
        name="endUserSession",
        summary="End a user's session (admins)",
        status_code=204,
        guards=[requires_admin],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def end_user_session(
        self,
        sessions: NamedDependency[SessionService],
        user_id: UserIdPath,
        session_id: SessionId,
    ) -> None:
        if not await sessions.end(user_id, session_id):
            raise NotFound("The user has no live session with this id.")
