"""The live stream over a real server and a real streaming client: events as they commit, each with its cursor as
`id:`, and a reconnect with `Last-Event-ID` resuming exactly after the last event received."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

STREAM = "/api/v1/events/stream"


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The events of an SSE response as {id, event, data} (comment lines, the heartbeats, skipped)."""
    fields: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value


async def take(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    async for event in sse_events(response):
        received.append(event)
        if len(received) == count:
            break
    return received


async def create_users(http: httpx.AsyncClient, key: str, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        response = await http.post(
            "/api/v1/users", json={"email": f"{name}@example.com", "username": name}, headers={"X-API-Key": key}
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def test_events_stream_live_and_resume_after_the_last_event_id(
    live_url: str, reader_key: str, service_key: str
) -> None:
    headers = {"X-API-Key": reader_key}
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
        async with http.stream("GET", STREAM, headers=headers, params={"type": "user.created"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            receiving = asyncio.create_task(take(stream, 3))
            await asyncio.sleep(0.3)  # subscribed before the writes (a stream without a cursor starts at now)
            ids = await create_users(http, service_key, ["sse-1", "sse-2", "sse-3"])
            received = await asyncio.wait_for(receiving, 30)
        assert [event["data"]["subject"]["id"] for event in received] == ids
        assert [event["event"] for event in received] == ["user.created"] * 3
        assert len({event["id"] for event in received}) == 3

        # Resume after the first: the other two, then what commits later.
        resumed_headers = headers | {"Last-Event-ID": received[0]["id"]}
        async with http.stream("GET", STREAM, headers=resumed_headers, params={"type": "user.created"}) as stream:
            receiving = asyncio.create_task(take(stream, 3))
            later = await create_users(http, service_key, ["sse-4"])
            resumed = await asyncio.wait_for(receiving, 30)
        assert [event["data"]["subject"]["id"] for event in resumed] == [*ids[1:], *later]
        assert [event["id"] for event in resumed[:2]] == [event["id"] for event in received[1:]]

        # The same cursors page the feed: after the second event come the third and the fourth.
        page = await http.get(
            "/api/v1/events", params={"after": received[1]["id"], "type": "user.created"}, headers=headers
        )
        assert [item["subject"]["id"] for item in page.json()["items"]] == [ids[2], *later]


async def test_an_idle_stream_sends_heartbeats_and_still_gets_the_next_event(
    live_url: str, reader_key: str, service_key: str
) -> None:
    """The live server's streams beat every second (EVENT_STREAM_HEARTBEAT=1): a proxy never sees one silent."""
    async with (
        httpx.AsyncClient(base_url=live_url, timeout=30) as http,
        http.stream("GET", STREAM, headers={"X-API-Key": reader_key}, params={"type": "user.created"}) as stream,
    ):
        lines = stream.aiter_lines()
        beats = 0
        async with asyncio.timeout(10):
            while beats < 2:
                if (await anext(lines)).startswith(":"):
                    beats += 1
        (created,) = await create_users(http, service_key, ["after-beats"])
        async with asyncio.timeout(10):
            while not (line := await anext(lines)).startswith("data: "):
                pass
    assert json.loads(line.removeprefix("data: "))["subject"]["id"] == created
