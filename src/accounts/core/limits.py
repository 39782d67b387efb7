"""Failed-attempt limits: per account and per client address within a window, counted before the secret is checked,
so that concurrent guesses cannot overtake a limit. Passwords, second-factor codes and passkey assertions all count
here (table `login_failures`)."""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Integer, String, delete, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import PRIMARY
from accounts.core.errors import TooManyAttempts


class LoginFailure(DefaultBase):
    """Failed logins counted per account or per client address within a window, and the attempts in progress
    (counted before their password is checked, so that concurrent guesses cannot overtake the limit)."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    pending: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    window_started_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


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

    async def forgive(self, key: str) -> None:
        """Forget the failures counted on `key` (a password reset proves the account's owner)."""
        await self.session.execute(delete(LoginFailure).where(LoginFailure.key == key))
