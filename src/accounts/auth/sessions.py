"""Sessions: one per login, with the rotation chain of refresh tokens it hands out (a family: `family_id` is the
session's id) and the access tokens issued in it (their `sid`). Ending a session revokes all of them at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from accounts.auth.cache import CredentialCache
from accounts.auth.credentials import new_refresh_token
from accounts.auth.models import RefreshToken, UserSession
from accounts.core.db import PRIMARY, after_commit
from accounts.core.errors import InvalidGrant
from accounts.core.security import secret_hash
from accounts.events.services import Subject, record

INVALID_REFRESH_TOKEN = "The refresh token is invalid, expired or revoked."  # noqa: S105 - a message


class Started(NamedTuple):
    session_id: UUID
    refresh_token: str
    new_device: bool
    """The user has logged in before, never with this user agent."""


class Rotated(NamedTuple):
    user_id: UUID
    session_id: UUID
    amr: list[str]
    refresh_token: str


# One round trip for a login: what the user's earlier sessions say of this device, the session and its first
# refresh token (the CTEs see the table as it was before the statement, so `earlier` never counts the new one).
_START = text(
    """
    WITH earlier AS (
        SELECT count(*) AS sessions, count(*) FILTER (WHERE user_agent IS NOT DISTINCT FROM :user_agent) AS same_device
        FROM sessions WHERE user_id = :user_id
    ), session AS (
        INSERT INTO sessions (id, user_id, amr, user_agent, address, last_used_at, created_at, updated_at)
        VALUES (:session_id, :user_id, CAST(:amr AS varchar[]), :user_agent, :address, now(), now(), now())
    ), token AS (
        INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at, updated_at)
        VALUES (:token_id, :user_id, :session_id, :token_hash, now() + make_interval(secs => :ttl), now(), now())
    )
    SELECT sessions > 0 AND same_device = 0 AS new_device FROM earlier
    """
).execution_options(bind_group=PRIMARY)

# One round trip for a refresh. The session's row is locked first: a rotation and an ending of the same session (a
# reused token, a logout) take their locks in the same order, session then tokens, so they queue and never deadlock.
# Then the token is spent once (a conditional UPDATE: of two concurrent uses one wins), the session touched and the
# chain's next token handed out.
_ROTATE = text(
    """
    WITH session AS (
        SELECT sessions.id FROM sessions JOIN refresh_tokens ON refresh_tokens.family_id = sessions.id
        WHERE refresh_tokens.token_hash = :token_hash AND sessions.revoked_at IS NULL
        FOR UPDATE OF sessions
    ), spent AS (
        UPDATE refresh_tokens SET used_at = now() FROM session
        WHERE refresh_tokens.family_id = session.id AND token_hash = :token_hash
            AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
        RETURNING refresh_tokens.family_id
    ), touched AS (
        UPDATE sessions SET last_used_at = now() FROM spent WHERE sessions.id = spent.family_id
        RETURNING sessions.id, sessions.user_id, sessions.amr
    ), token AS (
        INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at, updated_at)
        SELECT :token_id, user_id, id, :new_hash, now() + make_interval(secs => :ttl), now(), now() FROM touched
    )
    SELECT id, user_id, amr FROM touched
    """
).execution_options(bind_group=PRIMARY)


class SessionService:
    """The one writer of `sessions` and `refresh_tokens`."""

    def __init__(self, session: AsyncSession, credentials: CredentialCache) -> None:
        self.session = session
        self.credentials = credentials

    async def start(
        self, user_id: UUID, amr: list[str], *, user_agent: str | None, address: str | None, ttl: int
    ) -> Started:
        session_id, token = uuid7(), new_refresh_token()
        new_device = await self.session.scalar(
            _START,
            {
                "session_id": session_id,
                "user_id": user_id,
                "amr": amr,
                "user_agent": user_agent,
                "address": address,
                "token_id": uuid7(),
                "token_hash": secret_hash(token),
                "ttl": ttl,
            },
        )
        return Started(session_id, token, bool(new_device))

    async def rotate(self, token: str, ttl: int) -> Rotated:
        """Spend `token` once for the next of its chain. A token spent before ends its whole session: whoever holds
        the chain now, one of the two is not its owner."""
        fresh = new_refresh_token()
        row = (
            await self.session.execute(
                _ROTATE,
                {"token_hash": secret_hash(token), "token_id": uuid7(), "new_hash": secret_hash(fresh), "ttl": ttl},
            )
        ).first()
        if row is not None:
            return Rotated(row.user_id, row.id, list(row.amr), fresh)
        reused = await self.session.scalar(
            select(RefreshToken.family_id)
            .where(RefreshToken.token_hash == secret_hash(token), RefreshToken.used_at.is_not(None))
            .execution_options(bind_group=PRIMARY)
        )
        if reused is not None:
            await self._end(UserSession.id == reused, reason="reuse")
            await self.session.commit()  # the revocation must outlive the 401 that follows
            raise InvalidGrant("This refresh token was already used; its session is ended.")
        raise InvalidGrant(INVALID_REFRESH_TOKEN)

    async def unspent(self, token: str) -> RefreshToken | None:
        """The token's row if it is unused, unrevoked and unexpired."""
        found: RefreshToken | None = await self.session.scalar(
            select(RefreshToken).where(
                RefreshToken.token_hash == secret_hash(token),
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > datetime.now(UTC),
            )
        )
        return found

    async def live(self, user_id: UUID) -> list[UserSession]:
        """The user's sessions that have not ended and whose refresh token still works, newest first."""
        live = select(RefreshToken.family_id).where(
            RefreshToken.user_id == user_id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > datetime.now(UTC),
        )
        rows = await self.session.scalars(
            select(UserSession)
            .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None), UserSession.id.in_(live))
            .order_by(UserSession.last_used_at.desc())
            .execution_options(bind_group=PRIMARY)
        )
        return list(rows)

    async def end(self, user_id: UUID, session_id: UUID) -> bool:
        """End one of the user's sessions; whether it was live."""
        return bool(await self._end((UserSession.id == session_id) & (UserSession.user_id == user_id), reason="ended"))

    async def end_by_token(self, token: str) -> None:
        """End the session a refresh token belongs to (logging out; RFC 7009 revocation of a refresh token)."""
        family = select(RefreshToken.family_id).where(RefreshToken.token_hash == secret_hash(token))
        await self._end(UserSession.id.in_(family.scalar_subquery()), reason="logout")

    async def end_all(self, user_id: UUID, reason: str) -> None:
        await self._end(UserSession.user_id == user_id, reason=reason)

    async def _end(self, condition: object, *, reason: str) -> list[UUID]:
        """Mark the sessions ended and revoke their refresh tokens; on commit their access tokens are refused at once
        in this worker, and in every other as the trigger's notification reaches it."""
        now = datetime.now(UTC)
        rows = (
            await self.session.execute(
                update(UserSession)
                .where(condition, UserSession.revoked_at.is_(None))  # type: ignore[arg-type]
                .values(revoked_at=now)
                .returning(UserSession.id, UserSession.user_id)
            )
        ).all()
        ended = [row.id for row in rows]
        for row in rows:
            data = {"session_id": str(row.id), "reason": reason}
            await record(
                self.session,
                "session.reuse_detected" if reason == "reuse" else "session.revoked",
                Subject("user", row.user_id),
                data,
            )
        if ended:
            await self.session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id.in_(ended), RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )

            def refuse_their_tokens() -> None:
                for session_id in ended:
                    self.credentials.note_session_ended(session_id, int(now.timestamp()))

            after_commit(self.session, refuse_their_tokens)
        return ended
