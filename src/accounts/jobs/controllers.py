"""HTTP endpoints for jobs: `/api/v1/jobs/{id}` (status), its result, and aborting it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from uuid import UUID

import asyncpg
from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.response import File

from accounts.core.errors import Conflict, Forbidden, NotFound, problem_responses
from accounts.core.security import AUTHENTICATED, AuthenticatedRequest, Principal
from accounts.jobs.schemas import JobRead
from accounts.jobs.services import Jobs, to_read

JobId = Annotated[UUID, Parameter(description="The job's id, as given when it was started.")]


async def owned_job(jobs: Jobs, job_id: UUID, caller: Principal) -> asyncpg.Record:
    """The job's record, if `caller` started it or is an admin."""
    record = await jobs.store.get(job_id)
    if record["owner"] != caller.identity and not caller.is_admin:
        raise Forbidden("Only the job's creator or an admin may see it.")
    return record


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ["jobs"]
    security = AUTHENTICATED

    @get(
        "/{job_id:str}",
        operation_id="getJob",
        summary="Get a job's status and progress",
        description="Poll until `status` is `complete`, `failed` or `aborted`. Only its creator or an admin.",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def get_job(self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId) -> JobRead:
        return to_read(await owned_job(jobs, job_id, request.user))

    @get(
        "/{job_id:str}/result",
        operation_id="getJobResult",
        media_type="application/octet-stream",  # an export's NDJSON or CSV, or an import's NDJSON error report
        summary="Download a job's result",
        description="An export's file, or an import's error report; streamed. 409 until the job is complete.",
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def get_job_result(self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId) -> File:
        record = await owned_job(jobs, job_id, request.user)
        if record["status"] != "complete":
            raise Conflict(f"The job is {record['status']}; its result is not ready.")
        path = Path(record["result_path"]) if record["result_path"] else None
        if path is None or not path.is_file():
            raise NotFound("This job has no result file (or it has expired).")
        filename = f"{record['kind']}-{job_id}{path.suffix}"
        return File(path, media_type=record["result_media_type"], filename=filename)

    @delete(
        "/{job_id:str}",
        operation_id="abortJob",
        summary="Abort a queued or running job",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def abort_job(self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId) -> None:
        await owned_job(jobs, job_id, request.user)
        await jobs.abort(job_id)
