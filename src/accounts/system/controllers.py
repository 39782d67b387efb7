"""Health endpoints for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.auth.authentication import PUBLIC
from accounts.config import Settings
from accounts.errors import RETRY_AFTER_SECONDS, problem_responses
from accounts.media import JSON, MSGPACK, prefers_msgpack
from accounts.system.schemas import Health

_LIVE = Health(status="ok")
# Probes call this often: the body is encoded once, in both media types.
_LIVE_JSON = Response(msgspec.json.encode(_LIVE), media_type=JSON, headers={"Vary": "Accept"})
_LIVE_MSGPACK = Response(msgspec.msgpack.encode(_LIVE), media_type=MSGPACK, headers={"Vary": "Accept"})


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
    async def live(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return _LIVE_MSGPACK if prefers_msgpack(request.scope) else _LIVE_JSON

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
