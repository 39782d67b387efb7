"""SAQ tasks of the users domain: bulk import and export (started by `POST /api/v1/users/imports` and
`/exports`, registered in accounts.worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import structlog

from accounts.config import Settings
from accounts.core.passwords import hash_password, screen_password
from accounts.events.services import Subject, record_on
from accounts.jobs.services import OWNER, JobRun, JobSpec, job_task
from accounts.users.bulk import (
    MEDIA_TYPES,
    ExportWriter,
    RowChecker,
    count_rows,
    encode_errors,
    read_rows,
    write_whole,
)
from accounts.users.schemas import ImportFormat, OnDuplicate, RowError, UserCreate, UserExportQuery
from accounts.users.services import UserExports, UserImportBatches

# A short heartbeat (kept fresh by job_task's ticker): a killed worker's job runs again within a minute.
IMPORT_JOB = JobSpec(timeout=3600, retries=3, heartbeat=15)
EXPORT_JOB = JobSpec(timeout=3600, retries=3, heartbeat=15)
IMPORT_BATCH = 5_000
EXPORT_BATCH = 5_000
ERROR_REPORT_MEDIA_TYPE = "application/x-ndjson"

log = structlog.get_logger("accounts.users.jobs")


def upload_path(settings: Settings, name: str) -> Path:
    """Where an uploaded import file waits for its job; `name` is a bare file name, never a path."""
    if Path(name).name != name or name.startswith("."):
        msg = f"not an upload name: {name!r}"
        raise ValueError(msg)
    return settings.data_path / "imports" / name


class ImportCounts(msgspec.Struct, kw_only=True):
    rows: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0


@job_task
async def import_users(
    run: JobRun,
    *,
    job_id: str,  # noqa: ARG001
    upload: str,
    format: ImportFormat,
    on_duplicate: OnDuplicate,
) -> dict[str, Any]:
    """Import the users of an uploaded NDJSON or CSV file; the result is the error report (NDJSON of
    RowError). A retry starts again from the top: rows already written are duplicates then."""
    source = upload_path(run.settings, upload)
    finished = False
    try:
        counts = await _import(run, source, format, on_duplicate)
        finished = True
    except Exception:
        if run.job.attempts >= run.job.retries:  # the last attempt: the job ends failed
            await _record_finished(run, "import.finished", {"status": "failed"})
        raise
    finally:
        if finished or run.job.attempts >= run.job.retries:
            source.unlink(missing_ok=True)
    log.info("users imported", **msgspec.structs.asdict(counts))
    result = msgspec.structs.asdict(counts)
    await _record_finished(run, "import.finished", {"status": "complete", **result})
    return result


async def _record_finished(run: JobRun, event_type: str, data: dict[str, Any]) -> None:
    """The job's `import.finished` or `export.finished`, naming its owner; a failed job's only when the database
    still answers (what failed may be the database)."""
    subject = Subject("job", run.id)
    data = {"job_id": str(run.id), "owner": run.job.meta.get(OWNER), **data}
    if data["status"] == "complete":
        await record_on(run.connection, event_type, subject, data)
        return
    try:
        await record_on(run.connection, event_type, subject, data)
    except Exception:  # the job's failure is what the caller sees; a lost event here is logged
        log.warning("could not record the failed job's event", exc_info=True)


async def _import(run: JobRun, source: Path, file_format: ImportFormat, on_duplicate: OnDuplicate) -> ImportCounts:
    total = count_rows(source, file_format)
    counts = ImportCounts()
    checker = RowChecker()
    report_path = run.result_file(".errors.ndjson")
    await run.report(processed=0, total=total)
    batches = UserImportBatches(run.connection, on_duplicate, job_id=str(run.id))
    with source.open("rb") as file, write_whole(report_path) as report:
        valid: list[tuple[int, UserCreate]] = []
        errors: list[RowError] = []
        for line, parsed in read_rows(file, file_format):
            counts.rows += 1
            checked = checker.check(line, parsed) if isinstance(parsed, UserCreate) else parsed
            if isinstance(checked, str):
                errors.append(RowError(line=line, error=checked))
            else:
                valid.append((line, checked))
            if len(valid) + len(errors) >= IMPORT_BATCH:
                await _write_batch(batches, valid, errors, counts, report)
                await run.report(processed=counts.rows, total=max(total, counts.rows), failed=counts.failed)
                valid, errors = [], []
        await _write_batch(batches, valid, errors, counts, report)
    await run.report(processed=counts.rows, total=counts.rows, failed=counts.failed)
    await run.keep_result(report_path, ERROR_REPORT_MEDIA_TYPE)
    return counts


async def _write_batch(
    batches: UserImportBatches,
    valid: list[tuple[int, UserCreate]],
    errors: list[RowError],
    counts: ImportCounts,
    report: Any,
) -> None:
    rows, refused = await _with_password_hashes(batches, valid)
    errors = [*errors, *refused]
    if rows:
        written = await batches.write(rows)
        counts.created += written.created
        counts.updated += written.updated
        errors = [*errors, *written.errors]
    counts.failed += len(errors)
    report.write(encode_errors(errors))


async def _with_password_hashes(
    batches: UserImportBatches, valid: list[tuple[int, UserCreate]]
) -> tuple[list[tuple[int, UserCreate, str | None]], list[RowError]]:
    """The rows with their password hashed, for new users only: an import never changes the password of
    an existing user, so screening and argon2 (tens of ms a row) run only where a password is set. A row whose
    password is easy to guess is an error instead."""
    with_password = [user.email for _, user in valid if user.password is not None]
    existing = await batches.existing_emails(with_password) if with_password else set()
    rows: list[tuple[int, UserCreate, str | None]] = []
    refused: list[RowError] = []
    for line, user in valid:
        if user.password is None or user.email in existing:
            rows.append((line, user, None))
        elif weakness := await screen_password(
            user.password, email=user.email, username=user.username, full_name=user.full_name
        ):
            refused.append(RowError(line=line, error=f"the password {weakness}"))
        else:
            rows.append((line, user, await hash_password(user.password)))
    return rows, refused


@job_task
async def export_users(
    run: JobRun,
    *,
    job_id: str,  # noqa: ARG001
    format: ImportFormat,
    is_active: bool | None = None,
    email: str | None = None,
    q: str | None = None,
) -> dict[str, Any]:
    """Write the users the filters select, in keyset order, to a file that `GET /jobs/{id}/result` serves."""
    query = UserExportQuery(format=format, is_active=is_active, email=email, q=q)
    try:
        written = await _export(run, query)
    except Exception:
        if run.job.attempts >= run.job.retries:
            await _record_finished(run, "export.finished", {"status": "failed"})
        raise
    await _record_finished(run, "export.finished", {"status": "complete", "exported": written})
    return {"rows": written}


async def _export(run: JobRun, query: UserExportQuery) -> int:
    # UserExports only runs queries, which the run's connection takes as a pool does (its annotation is too narrow).
    exports = UserExports(run.connection)
    format = query.format
    total = await exports.count(query)
    await run.report(processed=0, total=total)
    path = run.result_file(f".{format}")
    written = 0
    with write_whole(path) as file:
        writer = ExportWriter(file, format)
        async for page in exports.pages(query, EXPORT_BATCH):
            writer.write(page)
            written += len(page)
            await run.report(processed=written, total=max(total, written))
        writer.close()
    await run.report(processed=written, total=written)
    await run.keep_result(path, MEDIA_TYPES[format])
    log.info("users exported", rows=written)
    return written
