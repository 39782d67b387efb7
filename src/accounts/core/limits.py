"""Failed-attempt limits: per account and per client address within a window, counted before the secret is checked,
so that concurrent guesses cannot overtake a limit. Passwords, second-factor codes and passkey assertions all count
here (table `login_failures`)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

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
# same keys queue rather than deadlock. Each statement runs on its own on plain asyncpg, committed in its round trip:
# no connection is held while the secret is checked, and a login costs a few cheap statements (make bench, scenario 5).
_LAPSED = "f.window_started_at <= now() - make_interval(secs => $3)"
_START_ATTEMPT = f"""
    WITH limits (key, max) AS (SELECT * FROM unnest($1::text[], $2::int[]))
    INSERT INTO login_failures AS f (key, failures, pending, window_started_at)
    SELECT key, 0, 1, now() FROM limits ORDER BY key
    ON CONFLICT (key) DO UPDATE SET
        failures = CASE WHEN {_LAPSED} THEN 0 ELSE f.failures END,
        pending = CASE WHEN {_LAPSED} THEN 1 ELSE f.pending + 1 END,
        window_started_at = CASE WHEN {_LAPSED} THEN now() ELSE f.window_started_at END
    WHERE {_LAPSED} OR f.failures + f.pending < (SELECT max FROM limits WHERE limits.key = f.key)
    RETURNING f.key
    """  # noqa: S608 - a constant fragment; values are bound parameters
_BLOCKING = (
    "SELECT key, failures, ceil(extract(epoch FROM window_started_at + make_interval(secs => $2) - now()))::int"
    " AS seconds_left FROM login_failures WHERE key = ANY($1::text[])"
)
_FAILED = (
    "UPDATE login_failures SET failures = failures + 1, pending = greatest(pending - 1, 0) WHERE key = ANY($1::text[])"
)
# A success forgives the account's failures (not its other attempts still in progress) and is no failure elsewhere.
_SUCCEEDED = (
    "UPDATE login_failures SET failures = CASE WHEN key = $2 THEN 0 ELSE failures END,"
    " pending = greatest(pending - 1, 0) WHERE key = ANY($1::text[])"
)
_FORGIVE = "DELETE FROM login_failures WHERE key = $1"


class Attempt:
    """A check of a password (or another secret) in progress, counted on its keys until it ends."""

    def __init__(self, pool: asyncpg.Pool, keys: list[str]) -> None:
        self.pool = pool
        self.keys = keys

    async def failed(self) -> None:
        """The secret was wrong: a failure on every key, committed at once (it must outlive the 401 that follows)."""
        await self.pool.execute(_FAILED, self.keys)

    async def succeeded(self) -> None:
        """The secret was right: the account's failures are forgiven."""
        await self.pool.execute(_SUCCEEDED, self.keys, self.keys[0])


class AttemptLimits:
    """Failed-attempt limits per account and per client address within LOGIN_FAILURE_WINDOW, one per worker.

    An attempt counts against a limit from before its secret is checked (pending) until it ends (a failure, or
    nothing): so of N concurrent wrong guesses against a limit of 5, at most 5 are checked; the rest are refused."""

    def __init__(self, pool: asyncpg.Pool, window: int) -> None:
        self.pool = pool
        self.window = window

    async def start(self, limits: dict[str, int]) -> Attempt:
        """Count an attempt on each key of `limits` (the account's first), or on none when one is at its limit:
        TooManyAttempts."""
        keys = list(limits)
        started = await self.pool.fetch(_START_ATTEMPT, keys, list(limits.values()), self.window)
        blocked = set(keys) - {row["key"] for row in started}
        if not blocked:
            return Attempt(self.pool, keys)
        rows = await self.pool.fetch(_BLOCKING, sorted(blocked), self.window)
        if waits := [row["seconds_left"] for row in rows if row["failures"] >= limits[row["key"]]]:
            raise TooManyAttempts("Too many failed logins; try again later.", retry_after=max(1, *waits))
        # Only attempts still in progress are in the way: one of them ends within the second.
        raise TooManyAttempts("Too many logins to this account are in progress; try again in a moment.", retry_after=1)

    async def forgive(self, key: str) -> None:
        """Forget the failures counted on `key` (a password reset proves the account's owner)."""
        await self.pool.execute(_FORGIVE, key)
