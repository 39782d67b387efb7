"""SAQ's Redis queue, less a race of its sweep that aborted jobs a worker had just taken (tobymao/saq#124, #277).

A dequeue moves the job's id onto the active list, and only then does the worker mark the job `active`. SAQ's sweep
takes every job on the active list that is not `active` for stranded and aborts it, so a sweep falling between the
two steps aborted a healthy job on its first attempt: most often a job submitted just before a worker starts, as
the worker sweeps and dequeues at once. Here a `queued` job on the active list is swept only when the next sweep
finds it there unchanged (same `touched`): then its worker died between the two steps. Everything else is swept
as SAQ does: a job that is not active, or active past its timeout or heartbeat, is aborted, then retried while it
has attempts left; an id whose job is gone leaves the lists.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog
from saq.job import Job, Status
from saq.queue.redis import RedisQueue

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

log = structlog.get_logger("accounts.jobs")

# The sweep's lock (one sweep per `lock` seconds across workers) and the active jobs, read in one step; nil when
# another worker holds the lock.
_ACTIVE_JOBS = """
if redis.call('SET', KEYS[1], 1, 'EX', ARGV[1], 'NX') == false then
    return false
end
local found = {}
for i, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    found[i] = {id, redis.call('GET', id)}
end
return found
"""


class RedisJobQueue(RedisQueue):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._active_jobs: AsyncScript | None = None
        self._taken: set[tuple[bytes, int]] = set()
        """(id, touched) of the `queued` jobs on the active list at this worker's last sweep."""

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        if self._active_jobs is None:
            self._active_jobs = self.redis.register_script(_ACTIVE_JOBS)
        found = await self._active_jobs(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        if found is None:  # another worker's turn
            return []
        taken: set[tuple[bytes, int]] = set()
        swept: list[bytes] = []
        for job_id, serialized in found:
            job = self.deserialize(serialized)
            if job is None:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                log.info("swept a missing job", job_id=job_id.decode())
            elif job.status == Status.QUEUED and (job_id, job.touched) not in self._taken:
                taken.add((job_id, job.touched))  # most likely just dequeued: its worker is marking it active
                continue
            elif job.status == Status.ACTIVE and not job.stuck:
                continue
            else:
                await self._sweep_job(job, abort)
            swept.append(job_id)
        self._taken = taken
        return [job_id.decode() for job_id in swept]

    async def _sweep_job(self, job: Job, abort: float) -> None:
        log.info("sweeping a job", job_id=job.id, status=job.status.value, attempts=job.attempts)
        error = self.swept_error_message
        await self.abort(job, error=error)
        with contextlib.suppress(asyncio.TimeoutError):  # a dead worker's job never ends by itself
            await job.refresh(abort)
        if job.retryable:
            await self.retry(job, error=error)
        else:
            await self.finish(job, Status.ABORTED, error=error)
