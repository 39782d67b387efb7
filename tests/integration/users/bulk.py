"""What the bulk import and export tests share, fixtures aside: starting jobs over HTTP, waiting for them, reading
results and the files they leave."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.config import Settings

Client = AsyncTestClient[Litestar]
USERS = "/api/v1/users"
IMPORTS = f"{USERS}/imports"
EXPORTS = f"{USERS}/exports"
NDJSON = "application/x-ndjson"
CSV = "text/csv"
FINAL = {"complete", "failed", "aborted"}
IMPORT_MAX_BYTES = 2 << 20
"""IMPORT_MAX_BYTES of the bulk tests' apps (2 MiB)."""


def ndjson(*rows: Any) -> bytes:
    """Rows as NDJSON lines; a `str` or `bytes` row is written as it is (for malformed lines)."""
    lines = [
        row.encode() if isinstance(row, str) else row if isinstance(row, bytes) else msgspec.json.encode(row)
        for row in rows
    ]
    return b"\n".join(lines) + b"\n"


async def wait_for(
    client: Client, job_id: str, *, headers: dict[str, str] | None = None, within: float = 60
) -> dict[str, Any]:
    """Poll the job until its status is final; returns it."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in FINAL:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {within} s"
        await asyncio.sleep(0.05)


async def start_import(
    client: Client, body: bytes, *, media_type: str = NDJSON, on_duplicate: str | None = None
) -> str:
    params = {"on_duplicate": on_duplicate} if on_duplicate else None
    response = await client.post(IMPORTS, content=body, headers={"Content-Type": media_type}, params=params)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    assert response.headers["location"] == f"/api/v1/jobs/{job_id}"
    return job_id


async def run_import(
    client: Client, body: bytes, *, media_type: str = NDJSON, on_duplicate: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Import `body` and wait; returns the finished job and its error report."""
    job = await wait_for(client, await start_import(client, body, media_type=media_type, on_duplicate=on_duplicate))
    assert job["status"] == "complete", job
    report = await client.get(job["result_url"])
    assert report.status_code == 200, report.text
    assert report.headers["content-type"].startswith(NDJSON)
    return job, [msgspec.json.decode(line) for line in report.content.splitlines()]


async def run_export(client: Client, **params: Any) -> tuple[dict[str, Any], bytes]:
    response = await client.post(EXPORTS, params=params)
    assert response.status_code == 202, response.text
    job = await wait_for(client, response.json()["id"])
    assert job["status"] == "complete", job
    result = await client.get(job["result_url"])
    assert result.status_code == 200, result.text
    return job, result.content


async def users_table(database_url: str) -> list[dict[str, Any]]:
    """Every user row (all columns), by e-mail: what an idempotent re-run must leave as it was."""
    connection = await asyncpg.connect(database_url)
    try:
        records = await connection.fetch("SELECT * FROM users ORDER BY email")
    finally:
        await connection.close()
    return [dict(record) for record in records]


def uploads(settings: Settings) -> list[Path]:
    """The import files waiting for (or left by) a job."""
    folder = settings.data_path / "imports"
    return sorted(folder.iterdir()) if folder.exists() else []
