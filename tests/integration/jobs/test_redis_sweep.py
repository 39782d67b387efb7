"""The Redis queue's sweep (accounts.jobs.redis_queue) against the real Redis: a job a worker has just taken off the
queue, not yet marked active, is left to its worker; one left in that state until the next sweep is put back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from saq.job import Status

from accounts.config import Settings
from tests.integration.jobs.support import connected_jobs, on_backend, saq_job
from tests.integration.jobs.tasks import QUICK

OWNER = "user:0196a000-0000-7000-8000-000000000002"


async def test_a_sweep_leaves_a_job_its_worker_just_took_and_puts_back_one_left_stranded(
    settings: Settings, tmp_path: Path
) -> None:
    async with connected_jobs(on_backend(settings, "redis", tmp_path)) as jobs:
        submitted = await jobs.submit("test_count_to", QUICK, OWNER, total=1)
        queue = jobs.queue
        taken = await queue.dequeue(timeout=1)  # a worker's first step: the id is on the active list, still queued
        assert taken is not None
        assert taken.status == Status.QUEUED

        assert await queue.sweep(lock=1, abort=0.1) == [], "SAQ's own sweep aborted it here"
        left = await saq_job(jobs, submitted.id)
        assert (left.status, left.attempts, left.error) == (Status.QUEUED, 0, None)

        await asyncio.sleep(1.1)  # the sweep's lock (one sweep a `lock` seconds across workers) has gone
        # The job is still on the active list and still queued: its worker died between the two steps.
        assert await queue.sweep(lock=1, abort=0.1) == [taken.id]
        requeued = await saq_job(jobs, submitted.id)
        assert requeued.status == Status.QUEUED
        assert requeued.error is not None, "it was swept"
        await asyncio.sleep(QUICK.retry_delay)
        await queue.schedule()  # what a worker does every second: a retry's delay has passed
        again = await queue.dequeue(timeout=5)
        assert again is not None
        assert again.id == taken.id, "back on the queue, for the next worker"


async def test_a_sweep_drops_an_id_whose_job_is_gone(settings: Settings, tmp_path: Path) -> None:
    async with connected_jobs(on_backend(settings, "redis", tmp_path)) as jobs:
        await jobs.connect()
        queue = jobs.queue
        gone = queue.job_id("no-such-job")
        active = queue.namespace("active")
        await queue.redis.rpush(active, gone)

        assert await queue.sweep(lock=1) == [gone]
        assert await queue.redis.lrange(active, 0, -1) == []
