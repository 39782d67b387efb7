"""Logins, refresh-token rotation, logouts, password changes and resets, e-mail verification, API keys and
the failed-login limits."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from advanced_alchemy.utils.serialization import schema_dump
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from uuid_utils.compat import uuid7

from accounts.auth.assertions import AssertionRefused, claimed_client, verify_assertion
from accounts.auth.cache import ClientState, CredentialCache
from accounts.auth.credentials import new_api_key, new_email_token
from accounts.auth.models import ApiKey, EmailToken, MfaChallenge, RevokedToken
from accounts.auth.schemas import ApiKeyCreate, ApiKeyRead, TokenIntrospection, TokenPair, TokenResponse
from accounts.auth.sessions import INVALID_REFRESH_TOKEN, SessionService
from accounts.auth.tokens import LEEWAY_SECONDS, AccessTokens, InvalidTokenError
from accounts.config import Settings
from accounts.core.db import PRIMARY, after_commit
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
from accounts.core.limits import AttemptLimits
from accounts.core.passwords import hash_password, needs_rehash, refuse_weak_password, verify_password
from accounts.core.security import secret_hash
from accounts.events.schemas import EventActor
from accounts.events.services import Subject, record
from accounts.mail.outbox import Outbox
from accounts.mfa.services import SecondFactorService
from accounts.mfa.totp import SecretSealer
from accounts.passkeys.schemas import AuthenticationResponseJSON
from accounts.passkeys.services import PasskeyRejected, PasskeyService
from accounts.users.models import User
from accounts.users.repository import LoginCandidate
from accounts.users.schemas import UserCreate, UserRead
from accounts.users.services import UserService, normalise_email

WRONG_CREDENTIALS = "The username or password is wrong."
WRONG_CODE = "The code is wrong, expired or already used."
INVALID_MFA_TOKEN = "The mfa_token is invalid, expired or already used; log in again."  # noqa: S105 - a message
PASSWORD_CHANGED = "Your password was changed"  # noqa: S105 - an e-mail's subject
PASSWORD_CHANGED_NOTICE = "The password of your account was changed, and every session of it was ended."  # noqa: S105
WRONG_CLIENT = "The client id or secret is wrong, or the client was deleted."
INACTIVE = TokenIntrospection(active=False)


class Device(NamedTuple):
    """Where a login comes from, as the session list shows it."""

    user_agent: str | None
    address: str


class SignedIn(NamedTuple):
    tokens: TokenPair
    notice: UUID | None
    """The outbox id of the security notice of a login from a new device, to enqueue after the commit."""


class MfaChallengeIssued(NamedTuple):
    """The password was right, and the user has a second factor: the login goes on with `complete_login`."""

    mfa_token: str
    expires_in: int
    methods: list[str]


class InvalidClient(Unauthenticated):
    """401: a service client's credentials are missing, malformed or wrong."""

    type = "/problems/invalid-client"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="accounts"'}


class UnauthorizedClient(Forbidden):
    """The client may not do this with this token (a token issued to another client)."""

    oauth_error = "unauthorized_client"


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
        created = await self.create(values)
        await record(
            self.repository.session,
            "api_key.created",
            Subject("api_key", created.id),
            {"name": created.name, "prefix": prefix, "scopes": created.scopes, "expires_at": created.expires_at},
        )
        return created, key

    async def revoke_key(self, key_id: UUID) -> ApiKey:
        # On the primary: a key created a moment ago may not be on a replica yet.
        key = await self.get(key_id, bind_group=PRIMARY)
        if key.revoked_at is None:
            key = await self.update({"revoked_at": datetime.now(UTC)}, item_id=key_id, bind_group=PRIMARY)
            await record(self.repository.session, "api_key.revoked", Subject("api_key", key_id))
        self.credentials.forget_api_key(key_id)
        return key


async def _audit_login(session: AsyncSession, type_: str, user_id: UUID, **data: str) -> None:
    """A login's audit event; its actor is the user who logs in (the request has no caller yet)."""
    await record(session, type_, Subject("user", user_id), data, actor=EventActor(type="user", id=str(user_id)))


def to_key_read(key: ApiKey) -> ApiKeyRead:
    """The wire form of an API key row (never its hash)."""
    return msgspec.convert(key, ApiKeyRead, from_attributes=True)


# Which second factors a user has, in one round trip (the tables belong to accounts.mfa and accounts.passkeys).
_SECOND_FACTORS = (
    "SELECT EXISTS (SELECT FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL) AS totp,"
    " EXISTS (SELECT FROM passkeys WHERE user_id = $1) AS passkey"
)


class ClientCredentialsGrant:
    """Service clients at the token endpoint: their authentication, by secret or `private_key_jwt` assertion (also
    at introspection and revocation), and the client-credentials grant. No database session: the clients come from
    the credential cache, so one object serves every request of a worker."""

    def __init__(self, tokens: AccessTokens, credentials: CredentialCache) -> None:
        self.tokens = tokens
        self.credentials = credentials

    async def authenticate(self, client_id: str, secret: str) -> ClientState:
        """The service client with this id and (current, or previous within its overlap) secret."""
        try:
            client = await self.credentials.client(UUID(client_id))
        except ValueError:
            client = None
        if client is None or not client.accepts(secret):
            raise InvalidClient(WRONG_CLIENT)
        return client

    async def authenticate_assertion(self, assertion: str, client_id: str, audiences: Sequence[str]) -> ClientState:
        """The service client a `private_key_jwt` assertion (RFC 7523) authenticates, if its signature, claims and
        jti check out: each assertion works once (`client_id`, when sent, must be the assertion's client)."""
        try:
            return await self._asserted_client(assertion, client_id, audiences)
        except AssertionRefused as exc:
            raise InvalidClient(str(exc)) from None

    async def _asserted_client(self, assertion: str, client_id: str, audiences: Sequence[str]) -> ClientState:
        claimed = claimed_client(assertion)
        if client_id and client_id != claimed:
            raise AssertionRefused("client_id: not the client of the client_assertion (its sub)")
        try:
            client = await self.credentials.client(UUID(claimed))
        except ValueError:
            client = None
        if client is None:
            raise AssertionRefused("client_assertion: no client has this id (its sub), or it was deleted")
        verified = verify_assertion(assertion, client, audiences)
        expires = datetime.fromtimestamp(verified.exp + LEEWAY_SECONDS, UTC)
        if not await self.credentials.spend_assertion(client.id, verified.jti, expires):
            raise AssertionRefused("client_assertion: its jti was used already; sign a new assertion for each request")
        return client

    def grant(self, client: ClientState, scope: str) -> TokenResponse:
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


async def introspect_access_token(
    tokens: AccessTokens, credentials: CredentialCache, token: str
) -> TokenIntrospection | None:
    """RFC 7662 for an access token: whether it works right now, and what it says, from this worker's caches with
    no database session; None when `token` is not a JWT (refresh tokens are URL-safe base64, which has no dot:
    `AuthService.introspect_refresh_token`)."""
    if "." not in token:
        return None
    try:
        claims = tokens.verify(token)
    except InvalidTokenError:
        return INACTIVE
    if await credentials.holder(claims) is None:
        return INACTIVE
    return TokenIntrospection(
        active=True,
        scope=claims.scope,
        client_id=str(claims.client_id) if claims.client_id is not None else msgspec.UNSET,
        token_type="Bearer",  # noqa: S106 - the OAuth token type
        exp=claims.exp,
        iat=claims.iat,
        sub=str(claims.sub),
        aud=tokens.audience,
        iss=tokens.issuer,
        jti=claims.jti,
    )


class AuthService:
    """Sign-in and the lifecycle of a user's tokens."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        tokens: AccessTokens,
        settings: Settings,
        users: UserService,
        credentials: CredentialCache,
        sealer: SecretSealer,
        limits: AttemptLimits,
    ) -> None:
        self.session = session
        self.tokens = tokens
        self.settings = settings
        self.users = users
        self.credentials = credentials
        self.sealer = sealer
        self.attempts = limits

    @cached_property
    def sessions(self) -> SessionService:
        # Made on first use: most token requests of service clients never touch sessions.
        return SessionService(self.session, self.credentials)

    @cached_property
    def factors(self) -> SecondFactorService:
        return SecondFactorService(self.session, self.sealer, self.settings)

    async def login(self, identifier: str, password: str, device: Device) -> SignedIn | MfaChallengeIssued:
        """Tokens for the user named by e-mail or username, if the password is right and no limit is hit; a
        challenge instead when the user has a second factor."""
        # Read and counted on plain asyncpg, each statement on its own: no connection is held while argon2 runs.
        user = await self.users.for_login(identifier)
        # One counter per account whichever name it is logged in with; unknown names count by name.
        account = str(user.id) if user is not None else normalise_email(identifier)
        attempt = await self.attempts.start(self._limits(account, device))
        hashed = user.hashed_password if user is not None else None
        if not await verify_password(hashed, password) or user is None or not user.is_active:
            if user is not None:
                await _audit_login(self.session, "login.failed", user.id, method="password", reason="wrong password")
                await self.session.commit()  # the audit event outlives the error that follows
            await attempt.failed()
            raise InvalidGrant(WRONG_CREDENTIALS)
        if hashed is not None and needs_rehash(hashed):
            await self.users.rehash_password(self.session, user.id, await hash_password(password))
        await attempt.succeeded()
        methods = await self.second_factor_methods(user.id)
        if methods:
            return await self._challenge(user.id, ["pwd"], methods, device)
        return await self.sign_in(user, ["pwd"], device)

    @cached_property
    def passkeys(self) -> PasskeyService:
        return PasskeyService(self.session, self.settings, self.users)

    async def second_factor_methods(self, user_id: UUID) -> list[str]:
        """The ways the user can answer a login's second-factor challenge (none: a password is enough)."""
        totp, passkey = await self.users.repository.pool.fetchrow(_SECOND_FACTORS, user_id) or (False, False)
        return (["otp", "recovery_code"] if totp else []) + (["passkey"] if passkey else [])

    async def _challenge(self, user_id: UUID, amr: list[str], methods: list[str], device: Device) -> MfaChallengeIssued:
        token = new_email_token()
        ttl = self.settings.mfa_token_ttl
        self.session.add(
            MfaChallenge(
                user_id=user_id,
                token_hash=secret_hash(token),
                amr=amr,
                user_agent=device.user_agent,
                address=device.address,
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
            )
        )
        await self.session.flush()
        return MfaChallengeIssued(mfa_token=token, expires_in=ttl, methods=methods)

    async def passkey_options(self, mfa_token: str | None) -> tuple[UUID, dict[str, Any]]:
        """A passkey sign-in's challenge and options: bound to the user of `mfa_token` (the second step of a password
        login), or to nobody (a passwordless login by a discoverable passkey)."""
        user_id = (await self._challenge_of(mfa_token)).user_id if mfa_token else None
        return await self.passkeys.authentication_options(user_id)

    async def passkey_login(
        self, challenge_id: UUID, credential: AuthenticationResponseJSON, mfa_token: str | None, device: Device
    ) -> SignedIn:
        """Tokens for the user whose passkey signed the challenge. With `mfa_token` the passkey must be that user's
        and it completes their password login; without, it is the only factor (its user verification required). A
        failed assertion counts against the address's limit and, when its account is known, the account's."""
        challenge = await self._challenge_of(mfa_token) if mfa_token else None
        known = challenge.user_id if challenge is not None else None
        attempt = await self.attempts.start(
            self._limits(str(known), device)
            if known is not None
            else {f"address:{device.address}": self.settings.login_max_failures_per_address}
        )
        try:
            passkey = await self.passkeys.authenticate(challenge_id, credential, known)
        except PasskeyRejected as exc:
            if exc.user_id is not None:
                await _audit_login(self.session, "login.failed", exc.user_id, method="passkey", reason=str(exc))
            await self.session.commit()  # the spent challenge and the audit event outlive the error that follows
            await attempt.failed()
            if known is None and exc.user_id is not None:  # now the account is known: it counts there too
                limit = {f"account:{exc.user_id}": self.settings.login_max_failures_per_account}
                with contextlib.suppress(TooManyAttempts):  # at its limit already: nothing more to count
                    await (await self.attempts.start(limit)).failed()
            raise
        if challenge is not None:
            await self._spend_challenge(challenge)
        await attempt.succeeded()
        user = await self.users.row(self.session, passkey.user_id)
        if not user.is_active:
            raise InvalidGrant(WRONG_CREDENTIALS)
        amr = [*challenge.amr, "hwk", "mfa"] if challenge is not None else ["hwk", "user", "mfa"]
        return await self.sign_in(user, amr, device)

    async def _challenge_of(self, mfa_token: str) -> MfaChallenge:
        """The open challenge of a password login that `mfa_token` names."""
        challenge = await self.session.scalar(
            select(MfaChallenge)
            .where(
                MfaChallenge.token_hash == secret_hash(mfa_token),
                MfaChallenge.used_at.is_(None),
                MfaChallenge.expires_at > func.now(),
            )
            .execution_options(bind_group=PRIMARY)
        )
        if challenge is None:
            raise InvalidGrant(INVALID_MFA_TOKEN)
        return challenge

    async def _spend_challenge(self, challenge: MfaChallenge) -> None:
        spent = await self.session.execute(
            update(MfaChallenge)
            .where(MfaChallenge.id == challenge.id, MfaChallenge.used_at.is_(None))
            .values(used_at=func.now())
            .returning(MfaChallenge.id)
        )
        if spent.first() is None:  # a concurrent request with another right answer took it
            raise InvalidGrant(INVALID_MFA_TOKEN)

    async def complete_login(self, mfa_token: str, method: str, code: str, device: Device) -> SignedIn:
        """The second step of a login: the challenge's `mfa_token` and a current TOTP code (`otp`) or an unused
        recovery code. A wrong code counts against the account's failed-login limit, as a wrong password does; the
        challenge is spent only by a right one."""
        challenge = await self._challenge_of(mfa_token)
        attempt = await self.attempts.start(self._limits(str(challenge.user_id), device))
        spend = self.factors.spend_totp if method == "otp" else self.factors.spend_recovery_code
        if not await spend(challenge.user_id, code):
            await _audit_login(self.session, "login.failed", challenge.user_id, method=method, reason="wrong code")
            await self.session.commit()  # the audit event outlives the error that follows
            await attempt.failed()
            raise InvalidGrant(WRONG_CODE)
        await self._spend_challenge(challenge)
        await attempt.succeeded()
        user = await self.users.row(self.session, challenge.user_id)
        if not user.is_active:
            raise InvalidGrant(WRONG_CREDENTIALS)
        amr = [*challenge.amr, "otp" if method == "otp" else "rc", "mfa"]
        return await self.sign_in(user, amr, device)

    async def sign_in(self, user: User | LoginCandidate, amr: list[str], device: Device) -> SignedIn:
        """A new session for the user and its first tokens; a security notice when it comes from a new device."""
        started = await self.sessions.start(
            user.id,
            amr,
            user_agent=device.user_agent,
            address=device.address,
            ttl=self.settings.refresh_token_ttl,
        )
        tokens = self._pair(user, started.session_id, amr, started.refresh_token)
        await _audit_login(
            self.session, "login.succeeded", user.id, method=" ".join(amr), session_id=str(started.session_id)
        )
        notice = None
        if started.new_device:
            what = f"Your account was logged in to from a new device: {device.user_agent or 'unknown'}"
            notice = await Outbox(self.session).write_notice(
                user.email, "New login to your account", f"{what}, address {device.address}."
            )
        return SignedIn(tokens, notice)

    def _limits(self, account: str, device: Device) -> dict[str, int]:
        return {
            f"account:{account}": self.settings.login_max_failures_per_account,
            f"address:{device.address}": self.settings.login_max_failures_per_address,
        }

    async def refresh(self, refresh_token: str) -> TokenPair:
        rotated = await self.sessions.rotate(refresh_token, self.settings.refresh_token_ttl)
        # On the session's own connection: its transaction is open, and behind PgBouncer a second connection
        # taken now could wait for this one.
        user = await self.users.row(self.session, rotated.user_id)
        if not user.is_active:
            raise InvalidGrant(INVALID_REFRESH_TOKEN)
        return self._pair(user, rotated.session_id, rotated.amr, rotated.refresh_token)

    def _pair(self, user: User | LoginCandidate, session_id: UUID, amr: list[str], refresh_token: str) -> TokenPair:
        access = self.tokens.issue(
            user.id, token_version=user.token_version, is_admin=user.is_superuser, session_id=session_id, amr=amr
        )
        return TokenPair(
            access_token=access,
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=self.tokens.ttl,
            refresh_token=refresh_token,
        )

    async def introspect_refresh_token(self, token: str) -> TokenIntrospection:
        """RFC 7662 for a refresh token: by one indexed read (an access token is `introspect_access_token`'s)."""
        row = await self.sessions.unspent(token)
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
        """RFC 7009: a refresh token ends its session (its whole family); an access token is revoked by its jti until
        it expires, on commit at once in this worker and in every other as the notification reaches it. A client's
        access token only by that client; unknown, expired and foreign tokens are no error (section 2.2)."""
        if "." not in token:
            await self.sessions.end_by_token(token)
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
        after_commit(self.session, lambda: self.credentials.note_revoked(claims.jti, expires))

    async def reset_second_factors(self, user_id: UUID) -> UUID:
        """An admin's reset of the user's second factors (a lost phone): the next login needs the password alone. The
        user hears of it; returns the notice's outbox id."""
        user = await self.users.row(self.session, user_id)
        if await self.factors.reset(user_id):
            await record(self.session, "mfa.disabled", Subject("user", user_id), {"kind": "totp", "reset": True})
        return await Outbox(self.session).write_notice(
            user.email,
            "Your second factors were reset",
            "An administrator removed the second factors of your account: logging in needs your password alone"
            " until you set one up again.",
        )

    async def log_out_everywhere(self, user_id: UUID) -> None:
        """Revoke every refresh token and, through the token version, every access token of the user."""
        await self.users.revoke_tokens(self.session, user_id)
        await self.sessions.end_all(user_id, reason="logged out everywhere")
        self.credentials.forget_user(user_id)

    async def change_password(self, user_id: UUID, current: str, new: str) -> UUID:
        """Set a new password if `current` is right, which logs the user out everywhere; wrong guesses count
        against the account's login limit. A new password that is easy to guess is refused first: it is no attempt.
        Returns the outbox id of the security notice."""
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
        await self.sessions.end_all(user_id, reason="password changed")
        self.credentials.forget_user(user_id)
        return await Outbox(self.session).write_notice(user.email, PASSWORD_CHANGED, PASSWORD_CHANGED_NOTICE)


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
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        users: UserService,
        credentials: CredentialCache,
        limits: AttemptLimits,
    ) -> None:
        self.session = session
        self.settings = settings
        self.users = users
        self.credentials = credentials
        self.limits = limits

    async def sign_up(self, data: UserCreate) -> tuple[UserRead, UUID]:
        """A new user and the e-mail that verifies their address, in one transaction: both or neither (unless
        REGISTRATION_ENABLED is off). Returns the user and the outbox message's id."""
        if not self.settings.registration_enabled:
            raise Forbidden("Sign-up is closed; ask an administrator for an account.")
        user = await self.users.create(self.session, data)
        return user, await self.send_verification(user)

    async def send_verification(self, user: User | UserRead) -> UUID:
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
        user_id, email = await self._spend(VERIFY, token)
        await self.users.mark_email_verified(self.session, user_id, email=email)
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
        user_id, _ = await self._spend(RESET, token)  # checks the token again, as it spends it
        await self.users.set_password(self.session, user_id, hashed, verified_email=True)
        await SessionService(self.session, self.credentials).end_all(user_id, reason="password reset")
        await self.limits.forgive(f"account:{user_id}")
        self.credentials.forget_user(user_id)
        return await Outbox(self.session).write_notice(holder.email, PASSWORD_CHANGED, PASSWORD_CHANGED_NOTICE)

    async def _spend(self, purpose: str, token: str) -> tuple[UUID, str]:
        """Mark the token used if it is unused, unexpired, of this purpose, and its account (active, for a
        reset) still has the address it was sent to; returns the user's id and that address."""
        spent = (
            await self.session.execute(
                update(EmailToken)
                .where(*_usable(purpose, token))
                .values(used_at=func.now())
                .returning(EmailToken.user_id, EmailToken.email)
            )
        ).first()
        if spent is None:
            raise InvalidEmailToken
        return spent.user_id, spent.email

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
