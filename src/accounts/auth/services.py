"""Logins, refresh-token rotation, logouts, password changes, API keys and the failed-login limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from advanced_alchemy.utils.serialization import schema_dump
from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from accounts.auth.credentials import new_api_key, new_refresh_token, secret_hash
from accounts.auth.models import ApiKey, LoginFailure, RefreshToken
from accounts.auth.passwords import hash_password, needs_rehash, verify_password
from accounts.auth.schemas import ApiKeyCreate, ApiKeyRead, TokenPair
from accounts.auth.tokens import AccessTokens
from accounts.config import Settings
from accounts.errors import AuthenticationFailed, TooManyAttempts
from accounts.users.models import User

WRONG_CREDENTIALS = "The username or password is wrong."


class RefreshTokenService(SQLAlchemyAsyncRepositoryService[RefreshToken]):
    class Repo(SQLAlchemyAsyncRepository[RefreshToken]):
        model_type = RefreshToken

    repository_type = Repo

    async def issue(self, user_id: UUID, ttl: int, family_id: UUID | None = None) -> str:
        token = new_refresh_token()
        await self.create(
            {
                "user_id": user_id,
                "family_id": family_id or uuid7(),
                "token_hash": secret_hash(token),
                "expires_at": datetime.now(UTC) + timedelta(seconds=ttl),
            },
            auto_refresh=False,
        )
        return token

    async def use(self, token: str) -> tuple[UUID, UUID]:
        """Spend `token` once; returns its user and family. A token spent before revokes its whole family."""
        session = self.repository.session
        token_hash = secret_hash(token)
        now = datetime.now(UTC)
        spent = (
            await session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.token_hash == token_hash,
                    RefreshToken.used_at.is_(None),
                    RefreshToken.revoked_at.is_(None),
                    RefreshToken.expires_at > now,
                )
                .values(used_at=now)
                .returning(RefreshToken.user_id, RefreshToken.family_id)
            )
        ).first()
        if spent is not None:
            return spent.user_id, spent.family_id
        reused = (
            await session.execute(
                select(RefreshToken.family_id).where(
                    RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_not(None)
                )
            )
        ).scalar_one_or_none()
        if reused is not None:
            await self._revoke(RefreshToken.family_id == reused)
            await session.commit()  # the revocation must outlive the 401 that follows
            raise AuthenticationFailed("This refresh token was already used; its sessions are revoked.")
        raise AuthenticationFailed("The refresh token is invalid, expired or revoked.")

    async def revoke(self, token: str) -> None:
        await self._revoke(RefreshToken.token_hash == secret_hash(token))

    async def revoke_all(self, user_id: UUID) -> None:
        await self._revoke(RefreshToken.user_id == user_id)

    async def _revoke(self, condition: object) -> None:
        await self.repository.session.execute(
            update(RefreshToken)
            .where(condition, RefreshToken.revoked_at.is_(None))  # type: ignore[arg-type]
            .values(revoked_at=datetime.now(UTC))
        )


class ApiKeyService(SQLAlchemyAsyncRepositoryService[ApiKey]):
    class Repo(SQLAlchemyAsyncRepository[ApiKey]):
        model_type = ApiKey

    repository_type = Repo

    async def create_key(self, data: ApiKeyCreate, created_by: UUID | None) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is kept."""
        prefix, key = new_api_key()
        values = schema_dump(data) | {"prefix": prefix, "secret_hash": secret_hash(key), "created_by": created_by}
        values["scopes"] = sorted(set(values["scopes"]))
        return await self.create(values), key

    async def revoke_key(self, key_id: UUID) -> ApiKey:
        key = await self.get(key_id)
        if key.revoked_at is None:
            key = await self.update({"revoked_at": datetime.now(UTC)}, item_id=key_id)
        return key


def to_key_read(key: ApiKey) -> ApiKeyRead:
    """The wire form of an API key row (never its hash)."""
    return msgspec.convert(key, ApiKeyRead, from_attributes=True)


class AuthService:
    """Sign-in and the lifecycle of a user's tokens."""

    def __init__(self, session: AsyncSession, tokens: AccessTokens, settings: Settings) -> None:
        self.session = session
        self.tokens = tokens
        self.settings = settings
        self.refresh_tokens = RefreshTokenService(session=session)

    async def login(self, identifier: str, password: str, address: str) -> TokenPair:
        """Tokens for the user named by e-mail or username, if the password is right and no limit is hit."""
        user = (
            await self.session.execute(
                select(User).where(or_(User.email == identifier.lower(), User.username == identifier))
            )
        ).scalar_one_or_none()
        # One counter per account whichever name it is logged in with; unknown names count by name.
        account = str(user.id) if user is not None else identifier.lower()
        counters = {f"account:{account}": self.settings.login_max_failures_per_account}
        counters[f"address:{address}"] = self.settings.login_max_failures_per_address
        failures = await self._check_limits(counters)
        await self.session.commit()  # hand the connection back while argon2 runs (~30 ms, often queued)
        hashed = user.hashed_password if user is not None else None
        if not await verify_password(hashed, password) or user is None or not user.is_active:
            await self._count_failure(counters)
            raise AuthenticationFailed(WRONG_CREDENTIALS, error="invalid_grant")
        if hashed is not None and needs_rehash(hashed):
            user.hashed_password = await hash_password(password)
        account_key = next(iter(counters))
        if account_key in failures:  # a success forgives the account's earlier failures
            await self.session.execute(delete(LoginFailure).where(LoginFailure.key == account_key))
        return await self.issue(user)

    async def refresh(self, refresh_token: str) -> TokenPair:
        user_id, family_id = await self.refresh_tokens.use(refresh_token)
        user = await self.session.get(User, user_id)
        if user is None or not user.is_active:
            raise AuthenticationFailed("The refresh token is invalid, expired or revoked.")
        return await self.issue(user, family_id)

    async def issue(self, user: User, family_id: UUID | None = None) -> TokenPair:
        return TokenPair(
            access_token=self.tokens.issue(user.id, token_version=user.token_version, is_admin=user.is_superuser),
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=self.tokens.ttl,
            refresh_token=await self.refresh_tokens.issue(user.id, self.settings.refresh_token_ttl, family_id),
        )

    async def log_out_everywhere(self, user_id: UUID) -> None:
        """Revoke every refresh token and, through the token version, every access token of the user."""
        await self.session.execute(update(User).where(User.id == user_id).values(token_version=User.token_version + 1))
        await self.refresh_tokens.revoke_all(user_id)

    async def change_password(self, user_id: UUID, current: str, new: str) -> None:
        """Set a new password if `current` is right; wrong guesses count against the account's login limit."""
        counters = {f"account:{user_id}": self.settings.login_max_failures_per_account}
        await self._check_limits(counters)
        user = await self.session.get(User, user_id)
        await self.session.commit()  # hand the connection back while argon2 runs
        if user is None or not await verify_password(user.hashed_password, current):
            await self._count_failure(counters)
            raise AuthenticationFailed("The current password is wrong.", error="invalid_grant")
        user.hashed_password = await hash_password(new)
        await self.log_out_everywhere(user_id)

    async def _check_limits(self, counters: dict[str, int]) -> set[str]:
        """Raise TooManyAttempts if a counter is over its limit; returns the keys that have failures."""
        now = datetime.now(UTC)
        window = timedelta(seconds=self.settings.login_failure_window)
        rows = (await self.session.execute(select(LoginFailure).where(LoginFailure.key.in_(counters)))).scalars().all()
        for row in rows:
            ends = row.window_started_at + window
            if row.failures >= counters[row.key] and ends > now:
                raise TooManyAttempts(
                    "Too many failed logins; try again later.",
                    retry_after=max(1, int((ends - now).total_seconds()) + 1),
                )
        return {row.key for row in rows}

    async def _count_failure(self, counters: dict[str, int]) -> None:
        now = datetime.now(UTC)
        expired = LoginFailure.window_started_at <= now - timedelta(seconds=self.settings.login_failure_window)
        statement = insert(LoginFailure).values(
            [{"key": key, "failures": 1, "window_started_at": now} for key in counters]
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[LoginFailure.key],
                set_={
                    "failures": case((expired, 1), else_=LoginFailure.failures + 1),
                    "window_started_at": case((expired, now), else_=LoginFailure.window_started_at),
                },
            )
        )
        await self.session.commit()  # the count must outlive the 401 that follows
