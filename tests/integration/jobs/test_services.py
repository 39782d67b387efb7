"""What callers read of SAQ's job (`to_read`, the body of `GET /api/v1/jobs/{id}`): its status, its error on one
line, its progress and result, and its times. The tables are the spec; SAQ's jobs are built as SAQ stores them.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from uuid import UUID

import pytest
from saq import Job
from saq.job import Status

from accounts.jobs.schemas import JobProgress
from accounts.jobs.services import ABORTED_BY_CALLER, WORKER_STOPPED, error_line, to_read

JOB_ID = "0196a000-0000-7000-8000-0000000000aa"
META = {"owner": "user:0196a000-0000-7000-8000-000000000001", "kind": "import_users"}


def saq_job(**fields: object) -> Job:
    """A job as `Jobs.submit` enqueues it (at 2025-12-01 10:00 UTC), with `fields` as SAQ has set them since."""
    return Job(**{"function": "import_users", "key": JOB_ID, "meta": META, "queued": 1_764_583_200_000} | fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "error", "shown"),
    [
        (Status.NEW, None, "queued"),
        (Status.QUEUED, None, "queued"),
        (Status.QUEUED, "cancelled", "queued"),  # a stopping worker put it back
        (Status.ACTIVE, None, "active"),
        (Status.ABORTING, ABORTED_BY_CALLER, "aborted"),  # its worker cancels it within a second
        (Status.ABORTING, WORKER_STOPPED, "active"),  # a sweep, until it queues the job again or gives it up
        (Status.ABORTED, ABORTED_BY_CALLER, "aborted"),
        (Status.ABORTED, WORKER_STOPPED, "aborted"),  # swept with no attempt left
        (Status.FAILED, "RuntimeError: out of order", "failed"),
        (Status.COMPLETE, None, "complete"),
    ],
)
def test_saq_statuses_as_callers_see_them(status: Status, error: str | None, shown: str) -> None:
    assert to_read(saq_job(status=status, error=error)).status == shown


def traceback_of(exception: Exception) -> str:
    try:
        raise exception
    except Exception:  # noqa: BLE001 - what SAQ does: it stores traceback.format_exc()
        return traceback.format_exc()


def chained() -> str:
    try:
        try:
            raise KeyError("upload")
        except KeyError as exc:
            raise RuntimeError("the upload is gone") from exc
    except RuntimeError:
        return traceback.format_exc()


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (None, None),
        ("", None),
        ("cancelled", "cancelled"),
        (WORKER_STOPPED, WORKER_STOPPED),
        (traceback_of(ValueError("flaky attempt 1 failed")), "ValueError: flaky attempt 1 failed"),
        (traceback_of(RuntimeError("parsed\nline 7: a quote")), "RuntimeError: parsed line 7: a quote"),
        (traceback_of(TimeoutError()), "TimeoutError"),
        (chained(), "RuntimeError: the upload is gone"),
        (traceback_of(ValueError("x" * 1000)), f"ValueError: {'x' * 488}"),
    ],
)
def test_the_error_is_one_line_naming_the_exception(error: str | None, line: str | None) -> None:
    assert error_line(error) == line


def test_a_complete_jobs_progress_result_and_times() -> None:
    job = saq_job(
        status=Status.COMPLETE,
        attempts=2,
        started=1_764_583_201_500,
        completed=1_764_583_203_250,
        meta=META
        | {
            "progress": {"processed": 7, "total": 7, "failed": 2},
            "result": {"path": "/data/jobs/x.errors.ndjson", "media_type": "application/x-ndjson"},
        },
    )

    read = to_read(job)

    assert (read.id, read.kind, read.attempts, read.error) == (UUID(JOB_ID), "import_users", 2, None)
    assert read.progress == JobProgress(processed=7, total=7, failed=2)
    assert read.result_url == f"/api/v1/jobs/{JOB_ID}/result"
    assert read.created_at == datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
    assert read.started_at == datetime(2025, 12, 1, 10, 0, 1, 500_000, tzinfo=UTC)
    assert read.finished_at == datetime(2025, 12, 1, 10, 0, 3, 250_000, tzinfo=UTC)


@pytest.mark.parametrize("status", [Status.QUEUED, Status.ACTIVE, Status.FAILED, Status.ABORTED])
def test_a_result_is_offered_only_once_the_job_is_complete(status: Status) -> None:
    result = {"path": "/data/jobs/x.csv", "media_type": "text/csv"}
    assert to_read(saq_job(status=status, meta=META | {"result": result})).result_url is None


def test_a_job_not_yet_started_has_no_progress_or_times_but_its_creation() -> None:
    read = to_read(saq_job(status=Status.QUEUED))

    assert read.progress == JobProgress(processed=0, total=None, failed=0)
    assert (read.started_at, read.finished_at, read.result_url) == (None, None, None)
    assert read.created_at == datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
