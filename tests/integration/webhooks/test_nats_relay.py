"""The NATS relay against the real JetStream server (127.0.0.1:4222): every event arrives once, in feed order,
with its id as Nats-Msg-Id; a relay made to publish everything again adds no duplicate to the stream; one started
afresh resumes from the stream's cursor."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import nats
import pytest
from nats.js import JetStreamContext

from accounts.config import Settings
from accounts.events.nats import CURSOR_HEADER, NatsRelay, ensure_stream
from accounts.events.services import START, EventFeed
from accounts.events.stream import EventBroadcaster
from tests.integration.auth.support import sql
from tests.integration.webhooks.support import eventually
from tests.integration.webhooks.test_deliveries import write_events

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def relay_settings(settings: Settings) -> Settings:
    """A stream and subjects of the test's own."""
    tag = uuid.uuid4().hex[:10]
    return msgspec.structs.replace(
        settings, nats_url=NATS_URL, nats_stream=f"TEST_{tag}", nats_subject_prefix=f"test{tag}.events"
    )


@pytest.fixture
async def js(relay_settings: Settings) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(NATS_URL)
    context = client.jetstream()
    try:
        yield context
    finally:
        await context.delete_stream(relay_settings.nats_stream)
        await client.close()


async def stream_messages(js: JetStreamContext, settings: Settings) -> list[tuple[str, str, str]]:
    """(subject, Nats-Msg-Id, event id in the body) of every message in the stream, in stream order."""
    info = await js.stream_info(settings.nats_stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(settings.nats_stream, seq)
        body = msgspec.json.decode(message.data or b"{}")
        found.append((message.subject, (message.headers or {})["Nats-Msg-Id"], body["id"]))
        assert CURSOR_HEADER in (message.headers or {})
    return found


async def test_every_event_is_published_once_and_a_restart_adds_no_duplicate(
    relay_settings: Settings, js: JetStreamContext, database_url: str
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    broadcaster = EventBroadcaster(EventFeed(pool), database_url)
    await broadcaster.start()
    await ensure_stream(js, relay_settings)
    relay = NatsRelay(relay_settings, pool, broadcaster)
    try:
        running = asyncio.create_task(relay.relay(js))
        await write_events(database_url, [str(uuid.uuid4()) for _ in range(4)], 10)
        feed = [str(row["id"]) for row in await sql(database_url, "SELECT id FROM events ORDER BY xid, seq")]
        await eventually(lambda: relay.published >= len(feed), message=f"{relay.published} of {len(feed)}")
        running.cancel()
        messages = await stream_messages(js, relay_settings)
        assert [event_id for _, _, event_id in messages] == feed  # each once, in feed order
        assert all(message_id == event_id for _, message_id, event_id in messages)
        assert {subject for subject, _, _ in messages} == {f"{relay_settings.nats_subject_prefix}.user.updated"}

        # Made to publish all of it again (a relay whose cursor fell behind): JetStream keeps one copy of each.
        again = NatsRelay(relay_settings, pool, broadcaster)
        rerun = asyncio.create_task(again.relay(js, after=START))
        await eventually(lambda: again.published >= len(feed))
        rerun.cancel()
        assert await stream_messages(js, relay_settings) == messages

        # A relay started afresh resumes after the stream's last event.
        fresh = NatsRelay(relay_settings, pool, broadcaster)
        resumed = asyncio.create_task(fresh.relay(js))
        await write_events(database_url, [str(uuid.uuid4())], 3)
        await eventually(lambda: fresh.published >= 3)
        resumed.cancel()
        assert fresh.published == 3
        assert len(await stream_messages(js, relay_settings)) == len(feed) + 3
    finally:
        await broadcaster.stop()
        await pool.close()
