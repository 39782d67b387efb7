"""Logins, refresh-token rotation, logouts, password changes and resets, e-mail verification, API keys and
the failed-login limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import cached_property
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from advanced_alchemy.utils.serialization import schema_dump
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from uuid_utils.compat import uuid7

from accounts.auth.cache import ClientState, CredentialCache
from accounts.auth.credentials import new_api_key, new_email_token, new_refresh_token
from accounts.auth.models import ApiKey, EmailToken, LoginFailure, RefreshToken, RevokedToken
from accounts.auth.schemas import ApiKeyCreate, ApiKeyRead, TokenIntrospection, TokenPair, TokenResponse
from accounts.auth.tokens import LEEWAY_SECONDS, AccessTokens, InvalidTokenError
from accounts.config import Settings
from accounts.core.db import PRIMARY
from accounts.core.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidGrant,
    InvalidInput,
    InvalidScope,
    ServiceError,
    TooManyAttempts,
    Unauthenticated,
)
from accounts.core.passwords import hash_password, needs_rehash, refuse_weak_password, verify_password
from accounts.core.security import secret_hash
from accounts.mail.outbox import Outbox
from accounts.users.models import User
from accounts.users.schemas import UserCreate
from accounts.users.services import UserService, normalise_email

WRONG_CREDENTIALS = "The username or password is wrong."
WRONG_CLIENT = "The client id or secret is wrong, or the client was deleted."
INACTIVE = TokenIntrospection(active=False)


class InvalidClient(Unauthenticated):
    """401: a service client's credentials are missing, malformed or wrong."""

    type = "/problems/invalid-client"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="accounts"'}


class UnauthorizedClient(Forbidden):
    """The client may not do this with this token (a token issued to another client)."""

    oauth_error = "unauthorized_client"


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
            raise InvalidGrant("This refresh token was already used; its sessions are revoked.")
        raise InvalidGrant("The refresh token is invalid, expired or revoked.")

    async def revoke(self, token: str) -> None:
        await self._revoke(RefreshToken.token_hash == secret_hash(token))

    async def revoke_family(self, token: str) -> None:
        """Revoke the token and every token of its rotation chain (RFC 7009 section 2.1)."""
        family = select(RefreshToken.family_id).where(RefreshToken.token_hash == secret_hash(token))
        await self._revoke(RefreshToken.family_id.in_(family.scalar_subquery()))

    async def unspent(self, token: str) -> RefreshToken | None:
        """The token's row if it is unused, unrevoked and unexpired."""
        found: RefreshToken | None = await self.repository.session.scalar(
            select(RefreshToken).where(
                RefreshToken.token_hash == secret_hash(token),
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > datetime.now(UTC),
            )
        )
        return found

    async def revoke_all(self, user_id: UUID) -> None:
        await self._revoke(RefreshToken.user_id == user_id)

    async def _revoke(self, condition: object) -> None:
        await self.repository.session.execute(
            update(RefreshToken)
            .where(condition, RefreshToken.revoked_at.is_(None))  # type: ignore[arg-type]
            .values(revoked_at=datetime.now(UTC))
        )


class ApiKeyService(SQLAlchemyAsyncRepositoryService[ApiKey]):
    """Service keys: created with a secret shown once, listed, and revoked at once in every worker."""

    class Repo(SQLAlchemyAsyncRepository[ApiKey]):
        model_type = ApiKey

    repository_type = Repo

    def __init__(self, session: AsyncSession, credentials: CredentialCache) -> None:
        super().__init__(session=session)
        self.credentials = credentials

    async def create_key(self, data: ApiKeyCreate, created_by: UUID | None) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is kept."""
        if data.expires_at is not None and data.expires_at <= datetime.now(UTC):
            raise InvalidInput(
                "expires_at: must be in the future",
                errors=[FieldError(field="expires_at", message="must be in the future")],
            )
        prefix, key = new_api_key()
        values = schema_dump(data) | {"prefix": prefix, "secret_hash": secret_hash(key), "created_by": created_by}
        values["scopes"] = sorted(set(values["scopes"]))
        return await self.create(values), key

    async def revoke_key(self, key_id: UUID) -> ApiKey:
        # On the primary: a key created a moment ago may not be on a replica yet.
        key = await self.get(key_id, bind_group=PRIMARY)
        if key.revoked_at is None:
            key = await self.update({"revoked_at": datetime.now(UTC)}, item_id=key_id, bind_group=PRIMARY)
        self.credentials.forget_api_key(key_id)
        return key


def to_key_read(key: ApiKey) -> ApiKeyRead:
    """The wire form of an API key row (never its hash)."""
    return msgspec.convert(key, ApiKeyRead, from_attributes=True)


# An attempt is counted as pending on each key unless a key's failures and pending attempts reach its limit within
# the window (a lapsed window starts again). Keys are locked in one order (sorted), so concurrent attempts on the
# same keys queue rather than deadlock.
_LAPSED = "f.window_started_at <= now() - make_interval(secs => :window)"
_START_ATTEMPT = text(
    f"""
    WITH limits (key, max) AS (SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:limits AS int[])))
    INSERT INTO login_failures AS f (key, failures, pending, window_started_at)
    SELECT key, 0, 1, now() FROM limits ORDER BY key
    ON CONFLICT (key) DO UPDATE SET
        failures = CASE WHEN {_LAPSED} THEN 0 ELSE f.failures END,
        pending = CASE WHEN {_LAPSED} THEN 1 ELSE f.pending + 1 END,
        window_started_at = CASE WHEN {_LAPSED} THEN now() ELSE f.window_started_at END
    WHERE {_LAPSED} OR f.failures + f.pending < (SELECT max FROM limits WHERE limits.key = f.key)
    RETURNING f.key
    """  # noqa: S608 - a constant fragment; values are bound parameters
).execution_options(bind_group=PRIMARY)
_BLOCKING = text(
    "SELECT key, failures, ceil(extract(epoch FROM window_started_at + make_interval(secs => :window) - now()))::int"
    " AS seconds_left FROM login_failures WHERE key = ANY(CAST(:keys AS text[]))"
).execution_options(bind_group=PRIMARY)
_FAILED = text(
    "UPDATE login_failures SET failures = failures + 1, pending = greatest(pending - 1, 0)"
    " WHERE key = ANY(CAST(:keys AS text[]))"
).execution_options(bind_group=PRIMARY)
# A success forgives the account's failures (not its other attempts still in progress) and is no failure elsewhere.
_SUCCEEDED = text(
    "UPDATE login_failures SET failures = CASE WHEN key = :account THEN 0 ELSE failures END,"
    " pending = greatest(pending - 1, 0) WHERE key = ANY(CAST(:keys AS text[]))"
).execution_options(bind_group=PRIMARY)


class Attempt:
    """A check of a password (or another secret) in progress, counted on its keys until it ends."""

    def __init__(self, session: AsyncSession, keys: list[str]) -> None:
        self.session = session
        self.keys = keys

    async def failed(self) -> None:
        """The secret was wrong: a failure on every key, committed at once (it must outlive the 401 that follows)."""
        await self.session.execute(_FAILED, {"keys": self.keys})
        await self.session.commit()

    async def succeeded(self) -> None:
        """The secret was right: the account's failures are forgiven, in the caller's transaction."""
        await self.session.execute(_SUCCEEDED, {"keys": self.keys, "account": self.keys[0]})


class AttemptLimits:
    """Failed-attempt limits per account and per client address within LOGIN_FAILURE_WINDOW.

    An attempt counts against a limit from before its secret is checked (pending) until it ends (a failure, or
    nothing): so of N concurrent wrong guesses against a limit of 5, at most 5 are checked; the rest are refused."""

    def __init__(self, session: AsyncSession, window: int) -> None:
        self.session = session
        self.window = window

    async def start(self, limits: dict[str, int]) -> Attempt:
        """Count an attempt on each key of `limits` (the account's first), or on none when one is at its limit:
        TooManyAttempts, and the caller's transaction is not committed."""
        keys = list(limits)
        started = await self.session.scalars(
            _START_ATTEMPT, {"keys": keys, "limits": list(limits.values()), "window": self.window}
        )
        blocked = set(keys) - set(started)
        if not blocked:
            return Attempt(self.session, keys)
        rows = (await self.session.execute(_BLOCKING, {"keys": sorted(blocked), "window": self.window})).all()
        if waits := [row.seconds_left for row in rows if row.failures >= limits[row.key]]:
            raise TooManyAttempts("Too many failed logins; try again later.", retry_after=max(1, *waits))
        # Only attempts still in progress are in the way: one of them ends within the second.
        raise TooManyAttempts("Too many logins to this account are in progress; try again in a moment.", retry_after=1)


class AuthService:
    """Sign-in and the lifecycle of a user's tokens."""

    def __init__(
        self,
        session: AsyncSession,
        tokens: AccessTokens,
        settings: Settings,
        users: UserService,
        credentials: CredentialCache,
    ) -> None:
        self.session = session
        self.tokens = tokens
        self.settings = settings
        self.users = users
        self.credentials = credentials
        self.attempts = AttemptLimits(session, settings.login_failure_window)

    @cached_property
    def refresh_tokens(self) -> RefreshTokenService:
        # Made on first use: most token requests of service clients never touch refresh tokens (~50 us to make).
        return RefreshTokenService(session=self.session)

    async def login(self, identifier: str, password: str, address: str) -> TokenPair:
        """Tokens for the user named by e-mail or username, if the password is right and no limit is hit."""
        user = await self.users.find_for_login(self.session, identifier)
        # One counter per account whichever name it is logged in with; unknown names count by name.
        account = str(user.id) if user is not None else normalise_email(identifier)
        attempt = await self.attempts.start(
            {
                f"account:{account}": self.settings.login_max_failures_per_account,
                f"address:{address}": self.settings.login_max_failures_per_address,
            }
        )
        await self.session.commit()  # hand the connection back while argon2 runs (~30 ms, often queued)
        hashed = user.hashed_password if user is not None else None
        if not await verify_password(hashed, password) or user is None or not user.is_active:
            await attempt.failed()
            raise InvalidGrant(WRONG_CREDENTIALS)
        if hashed is not None and needs_rehash(hashed):
            await self.users.rehash_password(self.session, user.id, await hash_password(password))
        await attempt.succeeded()
        return await self.issue(user.id, user.token_version, is_admin=user.is_superuser)

    async def refresh(self, refresh_token: str) -> TokenPair:
        user_id, family_id = await self.refresh_tokens.use(refresh_token)
        # On the session's own connection: its transaction is open, and behind PgBouncer a second connection
        # taken now could wait for this one.
        user = await self.users.row(self.session, user_id)
        if not user.is_active:
            raise InvalidGrant("The refresh token is invalid, expired or revoked.")
        return await self.issue(user_id, user.token_version, is_admin=user.is_superuser, family_id=family_id)

    async def issue(
        self, user_id: UUID, token_version: int, *, is_admin: bool, family_id: UUID | None = None
    ) -> TokenPair:
        return TokenPair(
            access_token=self.tokens.issue(user_id, token_version=token_version, is_admin=is_admin),
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=self.tokens.ttl,
            refresh_token=await self.refresh_tokens.issue(user_id, self.settings.refresh_token_ttl, family_id),
        )

    async def authenticate_client(self, client_id: str, secret: str) -> ClientState:
        """The service client with this id and (current, or previous within its overlap) secret."""
        try:
            client = await self.credentials.client(UUID(client_id))
        except ValueError:
            client = None
        if client is None or not client.accepts(secret):
            raise InvalidClient(WRONG_CLIENT)
        return client

    def grant_client(self, client: ClientState, scope: str) -> TokenResponse:
        """The client-credentials grant (RFC 6749 section 4.4): an access token for the client itself, with the
        scopes asked for (all of the client's when none are), and no refresh token. No database is involved."""
        requested = frozenset(scope.split()) if scope.strip() else client.scopes
        if not requested <= client.scopes:
            refused = " ".join(sorted(requested - client.scopes))
            raise InvalidScope(
                f"scope: the client may not ask for {refused}",
                errors=[FieldError(field="scope", message=f"not allowed for this client: {refused}")],
            )
        granted = sorted(requested)
        return TokenResponse(
            access_token=self.tokens.issue_for_client(client.id, granted),
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=self.tokens.ttl,
            scope=" ".join(granted),
        )

    async def introspect(self, token: str) -> TokenIntrospection:
        """RFC 7662: whether an access or refresh token works right now, and what it says. An access token is
        answered from this worker's caches; a refresh token by one indexed read."""
        if "." in token:  # a JWT; refresh tokens are URL-safe base64, which has no dot
            try:
                claims = self.tokens.verify(token)
            except InvalidTokenError:
                return INACTIVE
            if await self.credentials.holder(claims) is None:
                return INACTIVE
            return TokenIntrospection(
                active=True,
                scope=claims.scope,
                client_id=str(claims.client_id) if claims.client_id is not None else msgspec.UNSET,
                token_type="Bearer",  # noqa: S106 - the OAuth token type
                exp=claims.exp,
                iat=claims.iat,
                sub=str(claims.sub),
                aud=self.tokens.audience,
                iss=self.tokens.issuer,
                jti=claims.jti,
            )
        row = await self.refresh_tokens.unspent(token)
        user = await self.credentials.user(row.user_id) if row is not None else None
        if row is None or user is None or not user.is_active:
            return INACTIVE
        return TokenIntrospection(
            active=True,
            token_type="refresh_token",  # noqa: S106 - the kind of token, not a secret
            exp=int(row.expires_at.timestamp()),
            iat=int(row.created_at.timestamp()),
            sub=str(row.user_id),
            iss=self.tokens.issuer,
        )

    async def revoke(self, token: str, client: ClientState | None) -> None:
        """RFC 7009: a refresh token is revoked with its whole family; an access token by its jti until it expires,
        at once in this worker and, on commit, in every other. A client's access token only by that client;
        unknown, expired and foreign tokens are no error (section 2.2)."""
        if "." not in token:
            await self.refresh_tokens.revoke_family(token)
            return
        try:
            claims = self.tokens.verify(token)
        except InvalidTokenError:
            return  # expired, or not ours: there is nothing left to revoke
        if claims.client_id is not None and (client is None or client.id != claims.client_id):
            raise UnauthorizedClient("This token was issued to a service client: only that client may revoke it.")
        expires = claims.exp + LEEWAY_SECONDS
        await self.session.execute(
            insert(RevokedToken)
            .values(jti=claims.jti, expires_at=datetime.fromtimestamp(expires, UTC))
            .on_conflict_do_nothing()
        )
        self.credentials.note_revoked(claims.jti, expires)

    async def log_out_everywhere(self, user_id: UUID) -> None:
        """Revoke every refresh token and, through the token version, every access token of the user."""
        await self.users.revoke_tokens(self.session, user_id)
        await self.refresh_tokens.revoke_all(user_id)
        self.credentials.forget_user(user_id)

    async def change_password(self, user_id: UUID, current: str, new: str) -> None:
        """Set a new password if `current` is right, which logs the user out everywhere; wrong guesses count
        against the account's login limit. A new password that is easy to guess is refused first: it is no attempt."""
        user = await self.users.row(self.session, user_id)
        await refuse_weak_password(
            "new_password", new, email=user.email, username=user.username, full_name=user.full_name
        )
        attempt = await self.attempts.start({f"account:{user_id}": self.settings.login_max_failures_per_account})
        await self.session.commit()  # hand the connection back while argon2 runs
        if not await verify_password(user.hashed_password, current):
            await attempt.failed()
            raise Unauthenticated("The current password is wrong.", error="invalid_grant")
        await self.users.set_password(self.session, user_id, await hash_password(new))
        await attempt.succeeded()
        await self.refresh_tokens.revoke_all(user_id)
        self.credentials.forget_user(user_id)


VERIFY = "verify"
RESET = "reset"
INVALID_EMAIL_TOKEN = "The token is invalid, expired or already used; ask for a new e-mail."  # noqa: S105
VERIFY_SUBJECT = "Confirm your e-mail address"
RESET_SUBJECT = "Reset your password"

# One statement whether or not the account exists, so the answer's timing does not say which. At most one
# open reset token per user (a partial unique index): a new one replaces it only after the interval, and
# only then is an e-mail written; concurrent requests serialise on that index entry.
_REQUEST_RESET = text(
    """
    WITH account AS (
        SELECT id, email FROM users WHERE email = :email AND is_active
    ), token AS (
        INSERT INTO email_tokens AS t (id, user_id, purpose, token_hash, email, expires_at, created_at, updated_at)
        SELECT :token_id, id, 'reset', :token_hash, email, now() + make_interval(secs => :ttl), now(), now()
        FROM account
        ON CONFLICT (user_id) WHERE purpose = 'reset' AND used_at IS NULL DO UPDATE
        SET token_hash = excluded.token_hash, email = excluded.email, expires_at = excluded.expires_at,
            created_at = now(), updated_at = now()
        WHERE t.created_at <= now() - make_interval(secs => :interval)
        RETURNING t.email, t.expires_at
    )
    INSERT INTO outbox_messages (id, kind, recipient, subject, body, expires_at, created_at, updated_at)
    SELECT :outbox_id, 'password_reset', email, :subject, :body, expires_at, now(), now() FROM token
    RETURNING id
    """
).execution_options(bind_group=PRIMARY)  # it writes: never to a replica, though it reads like a query


class AlreadyVerified(Conflict):
    """409: the address is verified already; there is nothing to resend."""

    type = "/problems/already-verified"


class InvalidEmailToken(ServiceError):
    """400: an e-mailed token that is unknown, expired, already used, or for another purpose or address."""

    type = "/problems/invalid-token"

    def __init__(self) -> None:
        super().__init__(
            INVALID_EMAIL_TOKEN, errors=[FieldError(field="token", message="invalid, expired or already used")]
        )


class AccountEmails:
    """The e-mails that prove an address or reset a password, and the single-use tokens they carry.

    A token is 256 random bits, kept only as its SHA-256 (found by that hash, so nothing is compared
    character by character), bound to its purpose and to the address it was sent to, and spent once.
    Each e-mail is written into the outbox in the caller's transaction; the caller enqueues it after the
    commit (accounts.mail.jobs.enqueue_email)."""

    def __init__(
        self, session: AsyncSession, settings: Settings, users: UserService, credentials: CredentialCache
    ) -> None:
        self.session = session
        self.settings = settings
        self.users = users
        self.credentials = credentials

    async def sign_up(self, data: UserCreate) -> tuple[User, UUID]:
        """A new user and the e-mail that verifies their address, in one transaction: both or neither (unless
        REGISTRATION_ENABLED is off). Returns the user and the outbox message's id."""
        if not self.settings.registration_enabled:
            raise Forbidden("Sign-up is closed; ask an administrator for an account.")
        user = await self.users.create(self.session, data)
        return user, await self.send_verification(user)

    async def send_verification(self, user: User) -> UUID:
        """Write the verification e-mail of `user`'s address; returns the outbox message's id."""
        token = new_email_token()
        expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.email_verification_ttl)
        self.session.add(
            EmailToken(
                user_id=user.id, purpose=VERIFY, token_hash=secret_hash(token), email=user.email, expires_at=expires_at
            )
        )
        return await Outbox(self.session).write(
            kind="verify_email",
            recipient=user.email,
            subject=VERIFY_SUBJECT,
            body=self._body(VERIFY, token),
            expires_at=expires_at,
        )

    async def resend_verification(self, user_id: UUID) -> UUID:
        """Write a new verification e-mail for a user whose address is not verified yet, at most one per
        EMAIL_VERIFICATION_INTERVAL; earlier links keep working until they expire. Returns the outbox id."""
        # The user's row stays locked until the commit, so concurrent resends write one e-mail.
        user = await self.users.lock(self.session, user_id)
        if user.email_verified_at is not None:
            raise AlreadyVerified("This address is verified already; there is nothing to resend.")
        last_sent = await self.session.scalar(
            select(func.max(EmailToken.created_at)).where(EmailToken.user_id == user_id, EmailToken.purpose == VERIFY)
        )
        if last_sent is not None:
            wait = self.settings.email_verification_interval - (datetime.now(UTC) - last_sent).total_seconds()
            if wait > 0:
                raise TooManyAttempts("A verification e-mail was sent a moment ago; wait for it.", math.ceil(wait))
        return await self.send_verification(user)

    async def send_password_reset(self, email: str) -> UUID | None:
        """Write a reset e-mail if an active account has `email` and it got none within PASSWORD_RESET_INTERVAL;
        returns the outbox message's id, or None."""
        token = new_email_token()
        result = await self.session.execute(
            _REQUEST_RESET,
            {
                "email": normalise_email(email),
                "token_id": uuid7(),
                "token_hash": secret_hash(token),
                "ttl": self.settings.password_reset_ttl,
                "interval": self.settings.password_reset_interval,
                "outbox_id": uuid7(),
                "subject": RESET_SUBJECT,
                "body": self._body(RESET, token),
            },
        )
        outbox_id: UUID | None = result.scalar_one_or_none()
        return outbox_id

    async def verify_email(self, token: str) -> UUID:
        """Spend a verification token and mark its address verified; returns the user's id."""
        user_id = await self._spend(VERIFY, token)
        await self.users.mark_email_verified(self.session, user_id)
        return user_id

    async def reset_password(self, token: str, new_password: str) -> UUID:
        """Spend a reset token and set the new password; every refresh and access token of the user stops
        working, the account's failed-login count is forgiven, and the address counts as verified. A new password
        that is easy to guess is refused before the token is spent."""
        holder = await self.session.scalar(
            select(User).where(*_usable(RESET, token)).execution_options(bind_group=PRIMARY)
        )
        if holder is None:
            raise InvalidEmailToken
        await refuse_weak_password(
            "new_password", new_password, email=holder.email, username=holder.username, full_name=holder.full_name
        )
        await self.session.commit()  # hand the connection back while argon2 runs
        hashed = await hash_password(new_password)
        user_id = await self._spend(RESET, token)  # checks the token again, as it spends it
        await self.users.set_password(self.session, user_id, hashed, verified_email=True)
        await RefreshTokenService(session=self.session).revoke_all(user_id)
        await self.session.execute(delete(LoginFailure).where(LoginFailure.key == f"account:{user_id}"))
        self.credentials.forget_user(user_id)
        return user_id

    async def _spend(self, purpose: str, token: str) -> UUID:
        """Mark the token used if it is unused, unexpired, of this purpose, and its account (active, for a
        reset) still has the address it was sent to; returns the user's id."""
        spent = await self.session.execute(
            update(EmailToken).where(*_usable(purpose, token)).values(used_at=func.now()).returning(EmailToken.user_id)
        )
        user_id: UUID | None = spent.scalar_one_or_none()
        if user_id is None:
            raise InvalidEmailToken
        return user_id

    def _body(self, purpose: str, token: str) -> str:
        base = self.settings.public_url.rstrip("/")
        if purpose == VERIFY:
            return (
                "Hello,\n\nplease confirm that this address is yours by opening this link within"
                f" {_duration(self.settings.email_verification_ttl)}:\n\n{base}/verify-email?token={token}\n\n"
                f"(or send the token {token} to POST /api/v1/auth/verify-email).\n\n"
                "If you did not sign up, ignore this message.\n"
            )
        return (
            "Hello,\n\nsomeone, hopefully you, asked to reset the password of the account with this address."
            f" Choose a new one with this link within {_duration(self.settings.password_reset_ttl)}:\n\n"
            f"{base}/reset-password?token={token}\n\n"
            f"(or send the token {token} with a new_password to POST /api/v1/auth/password-reset/confirm).\n\n"
            "If you did not ask for this, ignore this message: your password stays as it is.\n"
        )


def _usable(purpose: str, token: str) -> list[ColumnElement[bool]]:
    """The token is unused, unexpired and of this purpose, and its account (active, for a reset) still has the
    address it was sent to."""
    conditions = [
        EmailToken.token_hash == secret_hash(token),
        EmailToken.purpose == purpose,
        EmailToken.used_at.is_(None),
        EmailToken.expires_at > func.now(),
        User.id == EmailToken.user_id,
        User.email == EmailToken.email,
    ]
    if purpose == RESET:
        conditions.append(User.is_active.is_(True))
    return conditions


def _duration(seconds: int) -> str:
    """`48 hours`, `1 hour`, `30 minutes`: how long a link works, in words."""
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
