"""The jobs table: what callers see of the background work they started (SAQ runs it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accounts.core.db import Base


class JobRecord(Base):
    """One job a caller started (an import, an export): its state, progress and result file.

    SAQ keeps its own job rows only briefly; this record outlives them, names the job's owner, and is
    what `GET /api/v1/jobs/{id}` reads. The worker keeps it in step (accounts.worker)."""

    __tablename__ = "jobs"

    kind: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    """The caller that started it (`Principal.identity`): only they and admins may see it."""
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    result_path: Mapped[str | None] = mapped_column(Text)
    result_media_type: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
