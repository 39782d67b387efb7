"""Health endpoints for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.auth.authentication import PUBLIC
from accounts.config import Settings
from accounts.errors import RETRY_AFTER_SECONDS, problem_responses
from accounts.media import PreEncoded
from accounts.system.schemas import Health

_LIVE = Health(status="ok")
_LIVE_RESPONSE = PreEncoded(_LIVE)  # probes call this often: encoded once


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    opt = PUBLIC

    @get(
        "/live",
        operation_id="getLiveness",
        summary="The process is up",
        responses={200: ResponseSpec(Health, description="The process is up", generate_examples=False)},
    )
    async def live(self) -> PreEncoded:
        return _LIVE_RESPONSE

    @get(
        "/ready",
        operation_id="getReadiness",
        summary="The service can serve requests: its database answers",
        responses=problem_responses(503),
    )
    async def ready(self, db_engine: NamedDependency[AsyncEngine], settings: NamedDependency[Settings]) -> Health:
        try:
            async with asyncio.timeout(settings.ready_timeout), db_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure, whatever the driver raises, means not ready
            raise ServiceUnavailableException(
                detail=f"The database did not answer within {settings.ready_timeout:g} s.",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ) from exc
        return _LIVE
