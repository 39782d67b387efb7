"""`/api/v1/jobs/{id}`: status for the job's creator (user or API key) and admins only, its result file, and
aborting it; on each queue backend, with jobs submitted by `Jobs.submit` as the endpoints that start them do.
What the endpoints answer comes from SAQ's own job, which is also checked here.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from saq import Job

from accounts.config import Settings
from accounts.jobs.services import Jobs, JobSpec
from tests.database import insert_api_key_with_id
from tests.integration.jobs.support import (
    Client,
    InProcessWorker,
    MakeCaller,
    delete_queue,
    saq_job,
    user_owner,
    wait_for,
    wait_for_saq_status,
    wait_for_status,
)
from tests.integration.jobs.tasks import ATTEMPTS, CANCELLED, FAILURE, GATES, QUICK
from tests.problems import assert_problem

JOBS = "/api/v1/jobs"
CSV = "email,username\nada@example.com,ada\ngrace@example.com,grace\n"
NDJSON = '{"email":"ada@example.com"}\n{"email":"grace@example.com"}\n'


def job_url(job_id: uuid.UUID | str) -> str:
    return f"{JOBS}/{job_id}"


# --- reading a job ------------------------------------------------------------------------------


async def test_the_creator_sees_a_queued_job(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller
) -> None:
    alice = await make_caller("alice")
    job_id = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id
    queued_ms = (await saq_job(jobs, job_id)).queued

    response = await jobs_client.get(job_url(job_id), headers=alice.headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body == {
        "id": str(job_id),
        "kind": "test_noop",
        "status": "queued",
        "attempts": 0,
        "progress": {"processed": 0, "total": None, "failed": 0},
        "error": None,
        "result_url": None,
        "created_at": body["created_at"],
        "started_at": None,
        "finished_at": None,
    }
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    assert datetime.fromisoformat(body["created_at"]) == datetime.fromtimestamp(queued_ms / 1000, UTC)


async def test_the_creator_follows_a_job_to_its_end(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, running_worker: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    job_id = (await jobs.submit("test_count_to", QUICK, user_owner(alice), total=4, hold=True)).id
    await wait_for(jobs, job_id, lambda job: job.progress.processed == 1)

    active = (await jobs_client.get(job_url(job_id), headers=alice.headers)).json()
    assert active["status"] == "active"
    assert active["attempts"] == 1
    assert active["progress"] == {"processed": 1, "total": 4, "failed": 0}
    assert active["started_at"] is not None
    assert active["finished_at"] is None

    GATES[str(job_id)].set()
    await wait_for_status(jobs, job_id, "complete")
    done = (await jobs_client.get(job_url(job_id), headers=alice.headers)).json()
    assert done["status"] == "complete"
    assert done["progress"] == {"processed": 4, "total": 4, "failed": 2}
    assert done["started_at"] == active["started_at"]
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert done["result_url"] is None


async def test_an_api_key_sees_the_job_it_started(
    backend: str, jobs_client: Client, jobs: Jobs, database_url: str
) -> None:
    owner, key = await insert_api_key_with_id(database_url, ["users:read"])
    job_id = (await jobs.submit("test_noop", QUICK, owner)).id

    response = await jobs_client.get(job_url(job_id), headers={"X-API-Key": key})

    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(job_id)


async def test_an_admin_sees_anyones_job(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, database_url: str
) -> None:
    alice = await make_caller("alice")
    root = await make_caller("root", admin=True)
    owner, _ = await insert_api_key_with_id(database_url, ["users:write"])
    by_alice = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id
    by_key = (await jobs.submit("test_noop", QUICK, owner)).id

    for job_id in (by_alice, by_key):
        response = await jobs_client.get(job_url(job_id), headers=root.headers)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(job_id)


async def test_another_user_may_not_see_a_job(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, database_url: str
) -> None:
    alice, bob = await make_caller("alice"), await make_caller("bob")
    _, other_key = await insert_api_key_with_id(database_url, ["users:read", "users:write"])
    job_id = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id

    for headers in (bob.headers, {"X-API-Key": other_key}):
        assert_problem(await jobs_client.get(job_url(job_id), headers=headers), 403)
        assert_problem(await jobs_client.get(f"{job_url(job_id)}/result", headers=headers), 403)
        assert_problem(await jobs_client.delete(job_url(job_id), headers=headers), 403)
    assert (await saq_job(jobs, job_id)).status.value == "queued", "a refused abort changes nothing"


async def test_a_user_may_not_see_a_job_started_by_an_api_key(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, database_url: str
) -> None:
    alice = await make_caller("alice")
    owner, _ = await insert_api_key_with_id(database_url, ["users:read"])
    job_id = (await jobs.submit("test_noop", QUICK, owner)).id

    assert_problem(await jobs_client.get(job_url(job_id), headers=alice.headers), 403)


async def test_an_unknown_job_is_404(backend: str, jobs_client: Client, make_caller: MakeCaller) -> None:
    root = await make_caller("root", admin=True)
    unknown = job_url(uuid.uuid4())

    assert_problem(await jobs_client.get(unknown, headers=root.headers), 404)
    assert_problem(await jobs_client.get(f"{unknown}/result", headers=root.headers), 404)
    assert_problem(await jobs_client.delete(unknown, headers=root.headers), 404)


async def test_a_job_the_queue_has_forgotten_is_404(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, job_settings: Settings
) -> None:
    alice = await make_caller("alice")
    job_id = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id
    assert (await jobs_client.get(job_url(job_id), headers=alice.headers)).status_code == 200

    await delete_queue(job_settings)  # as SAQ does JOB_RESULT_TTL after the job finished

    assert_problem(await jobs_client.get(job_url(job_id), headers=alice.headers), 404)
    assert_problem(await jobs_client.get(f"{job_url(job_id)}/result", headers=alice.headers), 404)
    assert_problem(await jobs_client.delete(job_url(job_id), headers=alice.headers), 404)


async def test_a_queued_job_no_caller_started_is_404_even_to_an_admin(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller
) -> None:
    root = await make_caller("root", admin=True)
    other = Job("test_noop", key=str(uuid.uuid4()), kwargs={"job_id": "-"})  # as an e-mail job: no owner in its meta
    await jobs.queue.enqueue(other)

    assert_problem(await jobs_client.get(job_url(other.key), headers=root.headers), 404)
    assert_problem(await jobs_client.delete(job_url(other.key), headers=root.headers), 404)
    assert (await saq_job(jobs, other.key)).status.value == "queued"


async def test_a_malformed_job_id_is_400(backend: str, jobs_client: Client, make_caller: MakeCaller) -> None:
    alice = await make_caller("alice")

    for malformed in ("not-a-uuid", "12345", "0196a000-0000-7000-8000-00000000000g"):
        assert_problem(await jobs_client.get(job_url(malformed), headers=alice.headers), 400)
        assert_problem(await jobs_client.get(f"{job_url(malformed)}/result", headers=alice.headers), 400)
        assert_problem(await jobs_client.delete(job_url(malformed), headers=alice.headers), 400)


async def test_without_credentials_it_is_401(backend: str, jobs_client: Client, jobs: Jobs) -> None:
    job_id = (await jobs.submit("test_noop", QUICK, "user:someone")).id

    assert_problem(await jobs_client.get(job_url(job_id)), 401)
    assert_problem(await jobs_client.delete(job_url(job_id)), 401)
    assert (await saq_job(jobs, job_id)).status.value == "queued"


# --- the result ---------------------------------------------------------------------------------


async def test_the_result_is_409_until_the_job_is_complete(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, in_process: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    job_id = (await jobs.submit("test_count_to", QUICK, user_owner(alice), total=2, hold=True)).id
    result = f"{job_url(job_id)}/result"

    assert_problem(await jobs_client.get(result, headers=alice.headers), 409)
    await in_process.start()
    await wait_for_status(jobs, job_id, "active")
    assert_problem(await jobs_client.get(result, headers=alice.headers), 409)
    GATES[str(job_id)].set()
    await wait_for_status(jobs, job_id, "complete")
    assert_problem(await jobs_client.get(result, headers=alice.headers), 404)


async def test_a_failed_jobs_result_is_409(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, running_worker: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    job_id = (await jobs.submit("test_always_fails", JobSpec(timeout=30, retries=1), user_owner(alice))).id
    await wait_for_status(jobs, job_id, "failed")

    body = assert_problem(await jobs_client.get(f"{job_url(job_id)}/result", headers=alice.headers), 409)
    assert "failed" in body["detail"]
    assert (await jobs_client.get(job_url(job_id), headers=alice.headers)).json()["error"] == f"RuntimeError: {FAILURE}"


async def test_the_result_file_is_downloaded_with_its_media_type(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, running_worker: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    root = await make_caller("root", admin=True)
    csv_job = (
        await jobs.submit(
            "test_write_result", QUICK, user_owner(alice), content=CSV, suffix=".csv", media_type="text/csv"
        )
    ).id
    ndjson_job = (
        await jobs.submit(
            "test_write_result",
            QUICK,
            user_owner(alice),
            content=NDJSON,
            suffix=".ndjson",
            media_type="application/x-ndjson",
        )
    ).id
    await wait_for_status(jobs, csv_job, "complete")
    await wait_for_status(jobs, ndjson_job, "complete")

    status = (await jobs_client.get(job_url(csv_job), headers=alice.headers)).json()
    assert status["result_url"] == f"{job_url(csv_job)}/result"
    assert status["progress"] == {"processed": 3, "total": 3, "failed": 0}

    for caller in (alice, root):
        response = await jobs_client.get(status["result_url"], headers=caller.headers)
        assert response.status_code == 200, response.text
        assert response.text == CSV
        assert response.headers["content-type"].split(";")[0] == "text/csv"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("attachment")
        assert f"test_write_result-{csv_job}.csv" in disposition

    response = await jobs_client.get(f"{job_url(ndjson_job)}/result", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.content == NDJSON.encode()
    assert response.headers["content-type"].split(";")[0] == "application/x-ndjson"
    assert f"test_write_result-{ndjson_job}.ndjson" in response.headers["content-disposition"]


async def test_a_result_file_that_is_gone_is_404(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, running_worker: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    job_id = (
        await jobs.submit(
            "test_write_result", QUICK, user_owner(alice), content=CSV, suffix=".csv", media_type="text/csv"
        )
    ).id
    await wait_for_status(jobs, job_id, "complete")
    kept = (await saq_job(jobs, job_id)).meta["result"]
    assert kept["media_type"] == "text/csv"
    Path(kept["path"]).unlink()  # as the purge does once it is older than JOB_RESULT_TTL

    assert_problem(await jobs_client.get(f"{job_url(job_id)}/result", headers=alice.headers), 404)


# --- aborting -----------------------------------------------------------------------------------


async def test_aborting_a_queued_job_means_its_task_never_runs(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, in_process: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    job_id = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id
    witness = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id

    response = await jobs_client.delete(job_url(job_id), headers=alice.headers)

    assert response.status_code == 204, response.text
    assert response.content == b""
    aborted = await jobs.read(job_id)
    assert aborted.status == "aborted"
    assert aborted.error == "Aborted at the caller's request."
    assert aborted.finished_at is not None
    assert aborted.started_at is None
    assert (await saq_job(jobs, job_id)).status.value == "aborted"

    await in_process.start()
    await wait_for_status(jobs, witness, "complete")  # the worker ran what was queued with it
    await asyncio.sleep(0.5)
    assert ATTEMPTS[str(job_id)] == []
    assert await jobs.read(job_id) == aborted
    body = (await jobs_client.get(job_url(job_id), headers=alice.headers)).json()
    assert (body["status"], body["attempts"], body["started_at"]) == ("aborted", 0, None)
    assert body["error"] == aborted.error


@pytest.mark.usefixtures("running_worker")
async def test_aborting_a_job_waiting_for_its_retry_means_it_never_runs_again(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("saq.utils.random", lambda: 1.0)  # no jitter: the next attempt is due in exactly a minute
    alice = await make_caller("alice")
    spec = JobSpec(timeout=30, retries=3, retry_delay=60)
    job_id = (await jobs.submit("test_always_fails", spec, user_owner(alice))).id
    await wait_for(jobs, job_id, lambda job: job.attempts == 1 and job.status == "queued")

    assert (await jobs_client.delete(job_url(job_id), headers=alice.headers)).status_code == 204

    aborted = await jobs.read(job_id)
    assert (aborted.status, aborted.attempts) == ("aborted", 1)
    assert aborted.finished_at is not None
    assert (await saq_job(jobs, job_id)).status.value == "aborted", "SAQ's record is final too"
    assert_problem(await jobs_client.delete(job_url(job_id), headers=alice.headers), 409)
    assert len(ATTEMPTS[str(job_id)]) == 1


async def test_aborting_a_running_job_cancels_its_task(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, running_worker: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    job_id = (await jobs.submit("test_count_to", QUICK, user_owner(alice), total=3, hold=True)).id
    await wait_for(jobs, job_id, lambda job: job.status == "active" and job.progress.processed == 1)

    response = await jobs_client.delete(job_url(job_id), headers=alice.headers)

    assert response.status_code == 204, response.text
    assert (await jobs.read(job_id)).status == "aborted", "callers see it aborted at once"
    await wait_for_saq_status(jobs, job_id, "aborted", within=5)  # the worker looks for aborted jobs every second
    assert str(job_id) in CANCELLED, "the running task was cancelled"
    job = await jobs.read(job_id)
    assert job.status == "aborted"
    assert job.attempts == 1
    assert job.progress.processed == 1, "the task did not go on after the abort"
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.started_at <= job.finished_at
    await asyncio.sleep(1.5)
    assert len(ATTEMPTS[str(job_id)]) == 1, "an aborted job is not retried"
    assert (await jobs.read(job_id)).status == "aborted"


async def test_an_admin_may_abort_anyones_job(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller
) -> None:
    alice = await make_caller("alice")
    root = await make_caller("root", admin=True)
    job_id = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id

    assert (await jobs_client.delete(job_url(job_id), headers=root.headers)).status_code == 204
    assert (await jobs.read(job_id)).status == "aborted"


async def test_aborting_a_finished_job_is_409(
    backend: str, jobs_client: Client, jobs: Jobs, make_caller: MakeCaller, running_worker: InProcessWorker
) -> None:
    alice = await make_caller("alice")
    complete = (await jobs.submit("test_noop", QUICK, user_owner(alice))).id
    failed = (await jobs.submit("test_always_fails", JobSpec(timeout=30, retries=1), user_owner(alice))).id
    aborted = (await jobs.submit("test_count_to", QUICK, user_owner(alice), total=2, hold=True)).id
    await wait_for_status(jobs, complete, "complete")
    await wait_for_status(jobs, failed, "failed")
    await wait_for_status(jobs, aborted, "active")
    assert (await jobs_client.delete(job_url(aborted), headers=alice.headers)).status_code == 204

    for job_id, status in ((complete, "complete"), (failed, "failed"), (aborted, "aborted")):
        before = await jobs.read(job_id)
        assert before.status == status
        assert_problem(await jobs_client.delete(job_url(job_id), headers=alice.headers), 409)
        assert (await jobs.read(job_id)).status == status
