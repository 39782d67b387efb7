"""Housekeeping of the auth domain's tables, run by the scheduled purge (accounts.system.jobs)."""

from __future__ import annotations

import asyncpg

from accounts.config import Settings

# Each statement deletes what nothing will read again; all are cheap on their expiry indexes.
_PURGES = {
    "refresh_tokens": "DELETE FROM refresh_tokens WHERE expires_at <= now()",
    "login_failures": "DELETE FROM login_failures WHERE window_started_at <= now() - make_interval(secs => $1)",
    "email_tokens": "DELETE FROM email_tokens WHERE expires_at <= now()",
    "revoked_tokens": "DELETE FROM revoked_tokens WHERE expires_at <= now()",  # the token is refused by `exp` now
    "mfa_challenges": "DELETE FROM mfa_challenges WHERE expires_at <= now()",
    "client_assertions": "DELETE FROM client_assertions WHERE expires_at <= now()",  # refused by `exp` now
    # A session with no refresh token left, idle longer than any access token lives, can never be used again.
    "sessions": "DELETE FROM sessions s WHERE s.last_used_at <= now() - interval '1 day'"
    " AND NOT EXISTS (SELECT FROM refresh_tokens r WHERE r.family_id = s.id)",
}


async def purge_expired_credentials(pool: asyncpg.Pool, settings: Settings) -> dict[str, int]:
    """Delete expired refresh tokens, login-failure windows, e-mailed tokens, revocations of expired access tokens,
    login challenges, the jtis of expired client assertions and the sessions nothing can use any more; returns how
    many of each."""
    deleted = {}
    for table, statement in _PURGES.items():
        arguments = [settings.login_failure_window] if "$1" in statement else []
        status = await pool.execute(statement, *arguments)
        deleted[table] = int(status.rsplit(" ", 1)[-1])
    return deleted
