"""Housekeeping on the queue: what has expired is deleted, every ten minutes (accounts.worker)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog

from accounts.jobs.services import WorkerContext

log = structlog.get_logger("accounts.housekeeping")

# Each statement deletes what nothing will read again; all are cheap on their expiry indexes.
_PURGES = {
    "idempotency_keys": "DELETE FROM idempotency_keys WHERE expires_at <= now()",
    "refresh_tokens": "DELETE FROM refresh_tokens WHERE expires_at <= now()",
    "login_failures": "DELETE FROM login_failures WHERE window_started_at <= now() - make_interval(secs => $1)",
    "email_tokens": "DELETE FROM email_tokens WHERE expires_at <= now()",
    # Sent messages are kept a week (without their bodies) to show what went out; unsent ones until they expire.
    "outbox_messages": "DELETE FROM outbox_messages WHERE sent_at <= now() - interval '7 days'"
    " OR (sent_at IS NULL AND expires_at <= now())",
}


async def purge_expired(ctx: WorkerContext) -> dict[str, Any]:
    """Delete expired idempotency keys, refresh tokens, login-failure windows and e-mailed tokens, old or
    expired outbox messages, and job result files older than JOB_RESULT_TTL (SAQ forgets the jobs themselves
    as long after they finish)."""
    settings = ctx["settings"]
    pool = ctx["pool"]
    deleted: dict[str, Any] = {}
    for table, statement in _PURGES.items():
        arguments = [settings.login_failure_window] if "$1" in statement else []
        status = await pool.execute(statement, *arguments)
        deleted[table] = int(status.rsplit(" ", 1)[-1])
    cutoff = time.time() - settings.job_result_ttl
    deleted["job_result_files"] = await asyncio.to_thread(_delete_older, settings.data_path / "jobs", cutoff)
    log.info("purged expired rows", **deleted)
    return deleted


def _delete_older(folder: Path, cutoff: float) -> int:
    """Delete the files in `folder` last modified before `cutoff` (epoch seconds): finished jobs' results, and
    what a killed worker left half written. Returns how many went."""
    if not folder.is_dir():
        return 0
    deleted = 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:  # gone meanwhile: another worker's purge
            continue
    return deleted
