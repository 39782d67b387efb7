"""A bulk import whose worker process is SIGKILLed mid-run is run again by the next worker within a minute, on
each queue backend, and ends with exactly the file's valid users and its invalid rows in the error report.

The parts are those of tests/integration/jobs (support.py): the session's database, a queue of the test's own
(on PostgreSQL, and on the shared Redis under a name of its own), and `accounts.worker.main` in child processes,
so the only thing broken is the test's own worker.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import msgspec
import pytest
from uuid_utils.compat import uuid7

from accounts.config import Settings
from accounts.jobs.services import kept_result
from accounts.users.jobs import IMPORT_BATCH, IMPORT_JOB, upload_path
from tests.faults.support import RecordFigures, seconds_until
from tests.integration.jobs.support import BACKENDS, connected_jobs, on_backend, saq_job, wait_for, worker_processes

OWNER = "user:0196a000-0000-7000-8000-00000000000f"
VALID_ROWS = 20_000
"""Enough rows that the import is still running when its worker is killed after the first batch."""
INVALID_ROWS: dict[int, bytes] = {  # by line, each breaking another rule; one in the batch written before the kill
    2: b'{"email": ',
    IMPORT_BATCH + 3: b'{"username": "no-email"}',
    15_001: msgspec.json.encode({"email": "user7@example.com", "username": "twice"}),
    VALID_ROWS + 4: b"[1, 2]",
}
LINES = VALID_ROWS + len(INVALID_ROWS)
FINAL = {"complete", "failed", "aborted"}
START = 60.0
"""Seconds the first worker process may take to start and write the import's first batch."""
RECOVERY = 60.0
"""Seconds from the new worker's start to the job's completion: the promise under test."""
CASE_SECONDS = START + RECOVERY + 30
"""The whole case, so that a hang anywhere fails it instead of using up CI's budget."""


def write_upload(settings: Settings) -> tuple[str, set[str]]:
    """An NDJSON upload of VALID_ROWS new users (no passwords) with INVALID_ROWS among them; returns its
    name and the e-mails of its valid rows."""
    emails: set[str] = set()
    lines: list[bytes] = []
    for line in range(1, LINES + 1):
        if line in INVALID_ROWS:
            lines.append(INVALID_ROWS[line])
        else:
            email = f"user{len(emails)}@example.com"
            emails.add(email)
            lines.append(msgspec.json.encode({"email": email, "username": f"user{len(emails)}"}))
    name = f"{uuid7()}.ndjson"
    path = upload_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return name, emails


async def user_emails(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        return [record["email"] for record in await connection.fetch("SELECT email FROM users")]
    finally:
        await connection.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_import_whose_worker_is_killed_completes_within_a_minute_of_a_new_worker(
    backend: str,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    record_figures: RecordFigures,
) -> None:
    job_settings = on_backend(settings, backend, tmp_path / "data")
    async with (
        asyncio.timeout(CASE_SECONDS),
        connected_jobs(job_settings) as jobs,
    ):
        with worker_processes(job_settings, tmp_path) as spawn_worker:
            upload, emails = write_upload(job_settings)
            submitted = await jobs.submit(
                "import_users", IMPORT_JOB, OWNER, upload=upload, format="ndjson", on_duplicate="skip"
            )
            first = spawn_worker()
            running = await wait_for(
                jobs, submitted.id, lambda job: job.progress.processed > 0 or job.status in FINAL, within=START
            )
            assert running.status == "active", running

            first.signal(signal.SIGKILL)  # right after its first report of rows written
            assert await first.exit_code(10) == -signal.SIGKILL
            stranded = await jobs.read(submitted.id)
            spawn_worker()

            async def finished() -> bool:
                return (await jobs.read(submitted.id)).status in FINAL

            recovered_after = await seconds_until(finished, within=RECOVERY)
            done = await jobs.read(submitted.id)
            result = kept_result(await saq_job(jobs, submitted.id))

    record_figures(
        {
            "rows processed before the kill": stranded.progress.processed,
            "complete after the new worker's start (s)": None if recovered_after is None else round(recovered_after, 1),
            "attempts": done.attempts,
        }
    )
    assert stranded.status == "active", stranded
    assert stranded.progress.processed < LINES, "the import was still running when its worker was killed"
    assert recovered_after is not None, f"not finished {RECOVERY} s after the new worker started: {done}"
    assert done.status == "complete", done
    assert done.attempts == 2
    assert (done.progress.processed, done.progress.total, done.progress.failed) == (LINES, LINES, len(INVALID_ROWS))
    users = await user_emails(database_url)
    assert len(users) == len(emails)
    assert set(users) == emails
    assert result is not None
    assert done.result_url == f"/api/v1/jobs/{submitted.id}/result"
    report = result[0].read_bytes().splitlines()
    assert [msgspec.json.decode(line)["line"] for line in report] == sorted(INVALID_ROWS)
