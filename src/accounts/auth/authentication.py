"""Who is calling: bearer access tokens and API keys, turned into a Principal; and the guards on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
import structlog
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.auth.cache import CredentialCache
from accounts.auth.credentials import API_KEY_PREFIX, api_key_prefix, same_hash
from accounts.auth.models import ApiKey
from accounts.auth.tokens import AccessTokens, InvalidTokenError
from accounts.errors import AuthenticationFailed

LAST_USED_PRECISION = timedelta(minutes=1)
ADMIN_SCOPES = frozenset({"users:read", "users:write"})
AUTHENTICATED: list[dict[str, list[str]]] = [{"oauth2": []}, {"bearer": []}, {"apiKey": []}]
"""OpenAPI security requirement of every endpoint that needs credentials: any one of the three schemes."""

log = structlog.get_logger("accounts.auth")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller of a request: a user (by access token) or a service (by API key)."""

    user_id: UUID | None = None
    api_key_id: UUID | None = None
    is_admin: bool = False
    scopes: frozenset[str] = frozenset()

    @property
    def own_user_id(self) -> UUID:
        """The calling user's id; a service key has none (routes for users are guarded by requires_user)."""
        if self.user_id is None:
            raise PermissionDeniedException(detail="This needs a user's access token, not an API key.")
        return self.user_id

    @property
    def identity(self) -> str:
        """Who owns what this caller creates (idempotency keys, jobs): `user:<id>` or `key:<id>`."""
        return f"key:{self.api_key_id}" if self.api_key_id is not None else f"user:{self.user_id}"

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def may_access_user(self, user_id: UUID, scope: str) -> bool:
        """Admins and keys with `scope` reach anyone; a user reaches only themselves."""
        return self.may(scope) or self.user_id == user_id


AuthenticatedRequest = Request[Principal, None, State]
"""The request of an authenticated route: `request.user` is the caller (read directly, no injection)."""


class Authenticator:
    """Checks the credentials of a request against the signing keys and the credential cache."""

    def __init__(self, tokens: AccessTokens, cache: CredentialCache, engine: AsyncEngine) -> None:
        self.tokens = tokens
        self.cache = cache
        self._engine = engine
        self._touched: dict[UUID, datetime] = {}
        self._writes: set[asyncio.Task[None]] = set()

    async def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        if api_key is None and authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise AuthenticationFailed(
                    "Use `Authorization: Bearer <token>` or `X-API-Key: <key>`.", error="invalid_request"
                )
            credentials = credentials.strip()
            if not credentials.startswith(API_KEY_PREFIX):
                return await self._user(credentials)
            api_key = credentials
        if api_key is None:
            raise AuthenticationFailed("Authentication is required.", error=None)
        return await self._api_key(api_key)

    async def _user(self, token: str) -> Principal:
        try:
            claims = self.tokens.verify(token)
        except InvalidTokenError as exc:
            raise AuthenticationFailed(str(exc)) from None
        state = await self.cache.user(claims.sub)
        if state is None or not state.is_active or state.token_version != claims.ver:
            raise AuthenticationFailed("The access token has been revoked.")
        return Principal(
            user_id=claims.sub,
            is_admin=state.is_superuser,
            scopes=ADMIN_SCOPES if state.is_superuser else frozenset(),
        )

    async def _api_key(self, key: str) -> Principal:
        prefix = api_key_prefix(key)
        state = await self.cache.api_key(prefix) if prefix else None
        if state is None or not same_hash(key, state.secret_hash):
            raise AuthenticationFailed("The API key is not valid.")
        now = datetime.now(UTC)
        if state.revoked or (state.expires_at is not None and state.expires_at <= now):
            raise AuthenticationFailed("The API key has been revoked or has expired.")
        self._note_use(state.id, state.last_used_at, now)
        return Principal(api_key_id=state.id, scopes=state.scopes)

    def _note_use(self, key_id: UUID, stored: datetime | None, now: datetime) -> None:
        """Keep `last_used_at` to the minute with at most one write a minute per key and worker."""
        last = max(filter(None, (stored, self._touched.get(key_id))), default=None)
        if last is not None and now - last < LAST_USED_PRECISION:
            return
        self._touched[key_id] = now
        task = asyncio.create_task(self._write_last_used(key_id, now))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_last_used(self, key_id: UUID, at: datetime) -> None:
        try:
            async with self._engine.begin() as connection:
                await connection.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
        except Exception:  # a lost timestamp must never fail or log a request as failed
            log.warning("could not record API key use", api_key_id=str(key_id), exc_info=True)


class AuthenticationMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        authenticator: Authenticator = connection.app.state.authenticator
        principal = await authenticator.authenticate(
            connection.headers.get("authorization") or None, connection.headers.get("x-api-key") or None
        )
        return AuthenticationResult(user=principal, auth=None)


PUBLIC = {"exclude_from_auth": True}
"""Route `opt` of the few public routes; every other route needs credentials (deny by default)."""


Guard = Callable[[ASGIConnection, BaseRouteHandler], None]  # type: ignore[type-arg]


def _guard(check: Callable[[Principal], str | None]) -> Guard:
    """A guard refusing (403) when `check(caller)` gives a reason. OPTIONS passes: Litestar answers it itself, for
    anyone (CORS preflights carry no credentials), so there is no caller to check."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        if connection.scope.get("method") == "OPTIONS":
            return
        if (reason := check(connection.user)) is not None:
            raise PermissionDeniedException(detail=reason)

    return guard


def requires(scope: str) -> Guard:
    """A guard: the caller holds `scope` (admins hold every scope)."""
    return _guard(lambda caller: None if caller.may(scope) else f"This needs the `{scope}` scope or an admin.")


requires_admin = _guard(lambda caller: None if caller.is_admin else "This needs an admin.")
"""A guard: the caller is an admin user."""

requires_user = _guard(
    lambda caller: None if caller.user_id is not None else "This needs a user's access token, not an API key."
)
"""A guard: the caller is a user (an access token), not a service key."""
