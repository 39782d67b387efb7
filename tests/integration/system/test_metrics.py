"""GET /metrics: Prometheus text with requests by route template, latency, pools, queue and build; and
the figures of every API worker, whichever worker answers the scrape."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from accounts.config import Settings
from tests.server import serving

Client = AsyncTestClient[Litestar]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def test_requests_are_counted_by_route_template_never_by_raw_path(client: Client, service_key: str) -> None:
    before = await scrape(client)
    missing = uuid.uuid4()
    for _ in range(3):
        response = await client.get(f"/api/v1/users/{missing}", headers={"X-API-Key": service_key})
        assert response.status_code == 404
    assert (await client.get("/no/such/route")).status_code == 404
    after = await scrape(client)

    route = "/api/v1/users/{user_id}"
    counted = value(after, "accounts_http_requests_total", method="GET", route=route, status="404")
    assert counted - value(before, "accounts_http_requests_total", method="GET", route=route, status="404") == 3
    unmatched = value(after, "accounts_http_requests_total", method="GET", route="<unmatched>", status="404")
    assert unmatched >= 1
    assert str(missing) not in after
    assert "/no/such/route" not in after


async def test_latency_histogram_buckets_add_up(client: Client) -> None:
    for _ in range(5):
        assert (await client.get("/health/live")).status_code == 200
    text = await scrape(client)
    route = {"method": "GET", "route": "/health/live"}
    count = value(text, "accounts_http_request_duration_seconds_count", **route)
    assert count >= 5
    assert value(text, "accounts_http_request_duration_seconds_bucket", le="+Inf", **route) == count
    assert 0 < value(text, "accounts_http_request_duration_seconds_sum", **route) < count  # each well under 1 s
    buckets = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "accounts_http_request_duration_seconds_bucket" and sample.labels["route"] == "/health/live"
    ]
    assert buckets == sorted(buckets)  # cumulative


async def test_pools_queue_in_flight_and_build_are_shown(client: Client, settings: Settings) -> None:
    text = await scrape(client)
    assert value(text, "accounts_http_requests_in_flight") == 1  # this scrape
    pool_size = settings.database_pool_size
    assert value(text, "accounts_db_pool_connections", pool="asyncpg", state="max") == pool_size
    most = pool_size + settings.database_max_overflow
    assert value(text, "accounts_db_pool_connections", pool="sqlalchemy", state="max") == most
    assert ("accounts_queue_jobs", frozenset({("state", "queued")})) in samples(text)
    assert re.search(r'accounts_build_info\{python="3\.\d+\.\d+",version="[^"]+"\} 1\.0', text)
    assert value(text, "accounts_api_workers") == 1


async def test_metrics_is_public_and_not_in_the_openapi_document(client: Client) -> None:
    assert (await client.get("/metrics")).status_code == 200  # no credentials
    document = (await client.get("/schema/openapi.json")).json()
    assert "/metrics" not in document["paths"]


def test_every_worker_is_counted_whichever_answers(database_url: str, tmp_path: Path) -> None:
    """Two granian workers; each scrape is answered by one of them, and every scrape shows both."""
    sent = 120
    with serving({"DATABASE_URL": database_url, "WEB_CONCURRENCY": "2"}, tmp_path / "log") as server:
        base = str(server.base_url)

        def fetch(_: int) -> int:  # a new connection each time, so the kernel spreads them over the workers
            return httpx.get(f"{base}/health/live", timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(fetch, range(sent))) == [200] * sent
        time.sleep(2.5)  # every worker publishes its snapshot each second
        totals, workers = set(), set()
        for _ in range(12):
            text = httpx.get(f"{base}/metrics", timeout=10).text
            totals.add(value(text, "accounts_http_requests_total", method="GET", route="/health/live", status="200"))
            workers.add(value(text, "accounts_api_workers"))
    assert workers == {2}
    # The readiness wait of `serving` may add a few; what matters is that every scrape saw one figure.
    assert len(totals) == 1
    assert totals.pop() >= sent
