"""HTTP endpoints for jobs: `/api/v1/jobs/{id}` (status), its result, and aborting it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.response import File, ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from saq import Job

from accounts.core.errors import Conflict, Forbidden, NotFound, problem_responses
from accounts.core.security import AUTHENTICATED, AuthenticatedRequest, Principal
from accounts.jobs.schemas import FINAL_STATUSES, JobRead
from accounts.jobs.services import KIND, OWNER, Jobs, kept_result, status_of, to_read

JOB_STREAM_HEARTBEAT = 15.0
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

    @get(
        "/{job_id:str}/events",
        name="streamJobEvents",
        media_type="text/event-stream",
        summary="Stream a job's progress and final status (SSE)",
        description="`text/event-stream`: `event: progress` with the job (as `getJob` answers it) now and at each"
        " change, then `event: finished` with its final state, and the stream ends; a comment line as a heartbeat"
        " while nothing changes. Only its creator or an admin.",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def stream_job_events(
        self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId
    ) -> ServerSentEvent:
        job = await owned_job(jobs, job_id, request.user)
        return ServerSentEvent(_job_events(jobs, job))

    @delete(
        "/{job_id:str}",
        name="abortJob",
        summary="Abort a queued or running job",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def abort_job(self, jobs: NamedDependency[Jobs], request: AuthenticatedRequest, job_id: JobId) -> None:
        await jobs.abort(await owned_job(jobs, job_id, request.user))


async def _job_events(jobs: Jobs, job: Job) -> AsyncIterator[ServerSentEventMessage]:
    async for state in jobs.follow(job, JOB_STREAM_HEARTBEAT):
        if state is None:
            yield ServerSentEventMessage(comment="heartbeat", data=None)
            continue
        event = "finished" if state.status in FINAL_STATUSES else "progress"
        yield ServerSentEventMessage(event=event, data=msgspec.json.encode(state).decode())
