"""Who is calling: bearer access tokens (of users and of service clients) and API keys, turned into the request's
Principal; the app's `state.authenticator`, asked by accounts.core.security.caller."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.auth.cache import ClientState, CredentialCache
from accounts.auth.credentials import API_KEY_PREFIX, api_key_prefix
from accounts.auth.models import ApiKey
from accounts.auth.tokens import AccessTokens, InvalidTokenError
from accounts.core.errors import Unauthenticated
from accounts.core.security import ADMIN_SCOPES, Principal, same_hash

LAST_USED_PRECISION = timedelta(minutes=1)

log = structlog.get_logger("accounts.auth")


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
                raise Unauthenticated(
                    "Use `Authorization: Bearer <token>` or `X-API-Key: <key>`.", error="invalid_request"
                )
            credentials = credentials.strip()
            if not credentials.startswith(API_KEY_PREFIX):
                return await self._user(credentials)
            api_key = credentials
        if api_key is None:
            raise Unauthenticated("Authentication is required.", error=None)
        return await self._api_key(api_key)

    async def _user(self, token: str) -> Principal:
        try:
            claims = self.tokens.verify(token)
        except InvalidTokenError as exc:
            raise Unauthenticated(str(exc)) from None
        holder = await self.cache.holder(claims)
        if holder is None:
            raise Unauthenticated("The access token has been revoked.")
        if isinstance(holder, ClientState):  # a service client's token: what it was granted, while the client lives
            return Principal(client_id=holder.id, scopes=frozenset(claims.scope.split()) & holder.scopes)
        return Principal(
            user_id=claims.sub,
            session_id=claims.sid,
            is_admin=holder.is_superuser,
            scopes=ADMIN_SCOPES if holder.is_superuser else frozenset(),
        )

    async def _api_key(self, key: str) -> Principal:
        prefix = api_key_prefix(key)
        state = await self.cache.api_key(prefix) if prefix else None
        if state is None or not same_hash(key, state.secret_hash):
            raise Unauthenticated("The API key is not valid.")
        now = datetime.now(UTC)
        if state.revoked or (state.expires_at is not None and state.expires_at <= now):
            raise Unauthenticated("The API key has been revoked or has expired.")
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
