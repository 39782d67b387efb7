"""Bulk jobs as events: an import's users created and changed (actor system, naming the job), `import.finished` and
`export.finished` with their counts, and a job's own stream of progress and final status."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.integration.users.bulk import Client, ndjson, run_export, run_import, start_import, wait_for

EVENTS = "/api/v1/events"


async def events_of(client: Client, key: str, count: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + 20
    while len(items) < count and asyncio.get_running_loop().time() < deadline:
        response = await client.get(EVENTS, params={"limit": 100, **params}, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        params["after"] = response.json()["next"]
        if len(items) < count:
            await asyncio.sleep(0.02)
    return items


async def test_an_import_and_an_export_are_events(bulk_client: Client, service_key: str, reader_key: str) -> None:
    bulk_client.headers["X-API-Key"] = service_key
    try:
        rows = [{"email": "ada@example.com", "username": "ada"}, {"email": "bob@example.com", "username": "bob"}]
        first, _ = await run_import(bulk_client, ndjson(*rows))
        changed = [{"email": "ada@example.com", "username": "ada", "bio": "Engines."}, rows[1]]
        second, _ = await run_import(bulk_client, ndjson(*changed), on_duplicate="update")
        export, _ = await run_export(bulk_client)
    finally:
        del bulk_client.headers["X-API-Key"]
    items = await events_of(bulk_client, reader_key, 6)
    assert [item["type"] for item in items] == [
        "user.created",
        "user.created",
        "import.finished",
        "user.updated",
        "import.finished",
        "export.finished",
    ]
    assert all(item["actor"] == {"type": "system", "id": None} for item in items)
    assert {item["data"]["username"] for item in items[:2]} == {"ada", "bob"}
    assert items[0]["data"]["job_id"] == first["id"]
    assert items[3]["data"]["changes"] == {"bio": "Engines."}
    assert items[2]["subject"] == {"type": "job", "id": first["id"]}
    assert items[2]["data"] | {"owner": None} == {
        "job_id": first["id"], "owner": None, "status": "complete", "rows": 2, "created": 2, "updated": 0, "failed": 0,
    }  # fmt: skip
    assert items[2]["data"]["owner"].startswith("key:")
    assert items[4]["data"]["updated"] == 1
    assert items[4]["subject"]["id"] == second["id"]
    assert items[5]["data"]["exported"] == 2
    assert items[5]["subject"]["id"] == export["id"]


async def test_a_finished_job_streams_its_end(bulk_client: Client, service_key: str) -> None:
    headers = {"X-API-Key": service_key}
    bulk_client.headers.update(headers)
    try:
        job_id = await start_import(bulk_client, ndjson({"email": "cy@example.com", "username": "cy"}))
    finally:
        del bulk_client.headers["X-API-Key"]
    assert (await wait_for(bulk_client, job_id, headers=headers))["status"] == "complete"
    # The in-process client reads a response whole: the stream of a finished job is its final state, then its end.
    response = await bulk_client.get(f"/api/v1/jobs/{job_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("data: ", 1)[1]))
        for block in response.text.replace("\r\n", "\n").strip().split("\n\n")
        if "data: " in block
    ]
    assert events[-1][0] == "finished"
    assert events[-1][1]["status"] == "complete"
    assert events[-1][1]["id"] == job_id
    other = await bulk_client.get("/api/v1/jobs/01936f3e-2a4b-7c3d-8e5f-a1b2c3d4e5f6/events", headers=headers)
    assert other.status_code == 404, other.text
