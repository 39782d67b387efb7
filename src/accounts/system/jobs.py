"""Housekeeping on the queue: every ten minutes (accounts.worker), each domain deletes what of its own has expired."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from accounts.auth.jobs import purge_expired_credentials
from accounts.core.http.idempotency import purge_idempotency_keys
from accounts.events.services import AuditTrail
from accounts.jobs.services import WorkerContext, purge_results
from accounts.mail.jobs import purge_outbox
from accounts.passkeys.services import purge_expired_challenges
from accounts.webhooks.jobs import purge_deliveries

log = structlog.get_logger("accounts.housekeeping")


async def purge_expired(ctx: WorkerContext) -> dict[str, Any]:
    """Delete expired idempotency keys, refresh tokens, login-failure windows, e-mailed tokens and client assertions'
    jtis, old or expired outbox messages, job result files older than JOB_RESULT_TTL (SAQ forgets the jobs themselves
    as long after they finish), and events older than AUDIT_RETENTION_DAYS; returns how many of each went."""
    settings, pool = ctx["settings"], ctx["pool"]
    deleted: dict[str, Any] = {
        "idempotency_keys": await purge_idempotency_keys(pool),
        **await purge_expired_credentials(pool, settings),
        "outbox_messages": await purge_outbox(pool),
        "job_result_files": await asyncio.to_thread(purge_results, settings),
        "events": await AuditTrail(pool).purge(settings.audit_retention_days),
        "webauthn_challenges": await purge_expired_challenges(pool),
        "webhook_deliveries": await purge_deliveries(pool),
    }
    log.info("purged expired rows", **deleted)
    return deleted
