"""Health endpoints for load balancers and orchestrators, and metrics for Prometheus."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.config import Settings
from accounts.core.errors import Unavailable, problem_responses
from accounts.core.http.media import PreEncoded
from accounts.core.http.openapi import NO_DATABASE
from accounts.core.observability.metrics import registry_for
from accounts.core.security import PUBLIC
from accounts.jobs.services import Jobs
from accounts.system.lifecycle import is_draining
from accounts.system.schemas import Health

_LIVE = Health(status="ok")
_LIVE_RESPONSE = PreEncoded(_LIVE)  # probes call this often: encoded once


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    opt = PUBLIC

    @get(
        "/live",
        name="getLiveness",
        summary="The process is up",
        opt=NO_DATABASE,
        responses={200: ResponseSpec(Health, description="The process is up", generate_examples=False)},
    )
    async def live(self) -> PreEncoded:
        return _LIVE_RESPONSE

    @get(
        "/ready",
        name="getReadiness",
        summary="The service can serve requests: its database answers",
        responses=problem_responses(503),
    )
    async def ready(self, db_engine: NamedDependency[AsyncEngine], settings: NamedDependency[Settings]) -> Health:
        if is_draining(settings):
            raise Unavailable("The server is shutting down.")
        try:
            async with asyncio.timeout(settings.ready_timeout), db_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure, whatever the driver raises, means not ready
            raise Unavailable(f"The database did not answer within {settings.ready_timeout:g} s.") from exc
        return _LIVE


class MetricsController(Controller):
    path = "/metrics"
    include_in_schema = False  # for Prometheus, not for generated clients
    opt = PUBLIC

    @get(summary="Prometheus metrics of the whole server (every API worker)")
    async def metrics(self, request: Request[Any, Any, State]) -> Response[bytes]:
        queue_depth = await _queue_depth(request.app.state.jobs)
        body = generate_latest(registry_for(request.app.state.metrics, queue_depth))
        return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _queue_depth(jobs: Jobs) -> list[Metric]:
    """Jobs waiting and running on the queue; nothing (rather than a failed scrape) if it is unreachable."""
    family = GaugeMetricFamily("accounts_queue_jobs", "Jobs on the queue, by state.", labels=["state"])
    try:
        await jobs.connect()
        for state in ("queued", "active"):
            family.add_metric([state], await jobs.queue.count(state))
    except Exception:  # noqa: BLE001 - the queue being down must not hide the other metrics
        return []
    return [family]
