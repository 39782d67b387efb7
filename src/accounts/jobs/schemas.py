"""What goes over the wire for jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from msgspec import Struct

JobStatus = Literal["queued", "active", "complete", "failed", "aborted"]
FINAL_STATUSES: frozenset[str] = frozenset({"complete", "failed", "aborted"})


class JobProgress(Struct, kw_only=True):
    processed: int
    """Items (rows) handled so far."""
    total: int | None
    """Items in all, once known."""
    failed: int
    """Items that could not be handled (an import's rejected rows)."""


class JobRead(Struct, kw_only=True):
    """A background job: poll it until `status` is final (`complete`, `failed` or `aborted`)."""

    id: UUID
    kind: str
    status: JobStatus
    attempts: int
    progress: JobProgress
    error: str | None
    """Why the job failed (or the last attempt failed); never a traceback."""
    result_url: str | None
    """Where to download the result (an export, an import's error report) once complete."""
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
