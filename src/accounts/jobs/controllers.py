"""HTTP endpoints for jobs: `/api/v1/jobs/{id}` (status), its result, and aborting it."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.response import File
from saq import Job

from accounts.core.errors import Conflict, Forbidden, NotFound, problem_responses
from accounts.core.security import AUTHENTICATED, AuthenticatedRequest, Principal
from accounts.jobs.schemas import JobRead
from accounts.jobs.services import KIND, OWNER, Jobs, kept_result, status_of, to_read

JobId = Annotated[UUID, Parameter(description="The job's id, as given when it was started.")]


async def owned_job(jobs: Jobs, job_id: UUID, caller: Principal) -> Job:
    """The job, if `caller` started it or is an admin."""
    job = await jobs.get(job_id)
    if job.meta[OWNER] != caller.identity and not caller.is_admin:
        raise Forbidden("Only the job's creator or an admin may see it.")
    return job


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    security = AUTHENTICATED

    @get(
        "/{job_id:str}",
        name="getJob",
        summary="Get a job's status and progress",
        description="Poll until `status` is `complete`, `failed` or `aborted`. Only its creator or an admin.",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def get_job(self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId) -> JobRead:
        return to_read(await owned_job(jobs, job_id, request.user))

    @get(
        "/{job_id:str}/result",
        name="getJobResult",
        media_type="application/octet-stream",  # an export's NDJSON or CSV, or an import's NDJSON error report
        summary="Download a job's result",
        description="An export's file, or an import's error report; streamed. 409 until the job is complete.",
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def get_job_result(self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId) -> File:
        job = await owned_job(jobs, job_id, request.user)
        if (status := status_of(job)) != "complete":
            raise Conflict(f"The job is {status}; its result is not ready.")
        if (result := kept_result(job)) is None or not result[0].is_file():
            raise NotFound("This job has no result file (or it has expired).")
        path, media_type = result
        return File(path, media_type=media_type, filename=f"{job.meta[KIND]}-{job_id}{path.suffix}")

    @delete(
        "/{job_id:str}",
        name="abortJob",
        summary="Abort a queued or running job",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def abort_job(self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId) -> None:
        await jobs.abort(await owned_job(jobs, job_id, request.user))
