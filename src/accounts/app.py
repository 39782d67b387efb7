"""create_app(): the one place that wires settings, plugins, routes, middleware and error handling."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemySerializationPlugin
from litestar import Litestar, Request, Router
from litestar.datastructures import State
from litestar.di import Provide

from accounts.auth import schemas as auth_schemas
from accounts.auth.authentication import Authenticator
from accounts.auth.cache import CredentialCache
from accounts.auth.controllers import (
    ApiKeyController,
    AuthController,
    DiscoveryController,
    JwksController,
    PasswordController,
    SessionController,
)
from accounts.auth.keys import SigningKeys
from accounts.auth.services import ClientCredentialsGrant
from accounts.auth.tokens import AccessTokens
from accounts.cli import AccountsCLIPlugin
from accounts.clients import schemas as clients_schemas
from accounts.clients.controllers import OAuthClientController
from accounts.config import Settings
from accounts.core.db import (
    RequestTransactions,
    SessionsPlugin,
    create_request_pool,
    session_dependency,
    sqlalchemy_config,
)
from accounts.core.errors import exception_handlers
from accounts.core.http.bodies import BodyRequest, check_input
from accounts.core.http.edge import Edge
from accounts.core.http.idempotency import IdempotencyKeys
from accounts.core.http.media import NegotiatedResponse
from accounts.core.http.openapi import finish_document, openapi_config
from accounts.core.limits import AttemptLimits
from accounts.core.observability.logging import configure_logging
from accounts.core.observability.metrics import RequestMetrics, asyncpg_pool_use, sqlalchemy_pool_use
from accounts.core.observability.tracing import start_tracing
from accounts.core.passwords import breach_checks
from accounts.core.security import require_credentials
from accounts.events.controllers import AuditEventController, EventController
from accounts.events.services import AuditTrail, EventFeed, set_recording
from accounts.events.stream import EventBroadcaster
from accounts.jobs.controllers import JobController
from accounts.jobs.services import Jobs
from accounts.mfa import schemas as mfa_schemas
from accounts.mfa.controllers import SecondFactorController
from accounts.mfa.totp import SecretSealer
from accounts.passkeys import schemas as passkeys_schemas
from accounts.passkeys.controllers import PasskeyController
from accounts.system.controllers import HealthController, MetricsController
from accounts.users import schemas as users_schemas
from accounts.users.controllers import UserController
from accounts.users.repository import UserRepository
from accounts.users.services import UserService
from accounts.webhooks import schemas as webhooks_schemas
from accounts.webhooks.controllers import WebhookController
from accounts.worker import make_queue, worker_in_process

SHARED = ("settings", "tokens", "credentials", "users", "jobs", "event_feed", "event_broadcaster", "audit_trail")
"""What a handler may be given by name: made once per worker and kept in `app.state` (the users service and the
jobs need the lifespan's connections). A provider of a per-request service takes `db_session` and the State itself,
so a handler resolves one dependency, not one per shared object."""


def _from_state(name: str) -> Provide:
    def provide(state: State) -> Any:
        return state[name]

    return Provide(provide, sync_to_thread=False)


async def before_handler(request: Request[Any, Any, Any]) -> None:
    """Before every handler: its caller authenticated unless it is PUBLIC (deny by default, for every route the app
    serves, however it was added), then the input checks (query strings and forms that are not UTF-8; JSON bodies
    are BodyRequest's)."""
    await require_credentials(request)
    await check_input(request)


API = Router(
    "/api/v1",
    route_handlers=[
        AuthController,
        UserController,
        PasswordController,
        SessionController,
        ApiKeyController,
        OAuthClientController,
        WebhookController,
        SecondFactorController,
        PasskeyController,
        JobController,
        EventController,
        AuditEventController,
    ],
)
"""Every endpoint of the API proper, under one prefix; health, keys, discovery and metrics stay at the root."""
REQUEST_EXAMPLES = (
    *users_schemas.REQUEST_EXAMPLES,
    *auth_schemas.REQUEST_EXAMPLES,
    *clients_schemas.REQUEST_EXAMPLES,
    *webhooks_schemas.REQUEST_EXAMPLES,
    *mfa_schemas.REQUEST_EXAMPLES,
    *passkeys_schemas.REQUEST_EXAMPLES,
)
"""An example of every request body, for the OpenAPI document."""


def serve_app() -> Litestar:
    """The app of a served worker (`accounts serve`: granian's factory). What `create_app` made (modules, the app
    and its routes, SQLAlchemy's metadata: ~200,000 objects) lives as long as the process, so it is frozen out of
    the collector's sight: a full collection scanned it all with the event loop stopped, 50 to 120 ms each time
    (the tail of p99 in make bench). Frozen again once the lifespan has started, for what it made (pools, caches,
    the queue): full collections still came every few seconds and took 13 ms each, 4 ms after (`make bench` scenario
    8, a worker's collections timed by `gc.callbacks`). Not in create_app: the tests make hundreds of apps in one
    process."""
    app = create_app()
    gc.freeze()
    app.on_startup.append(gc.freeze)
    return app


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application; `settings` defaults to those read from the environment."""
    settings = Settings.from_env() if settings is None else settings
    tracing = start_tracing()  # None unless the OTEL_* variables switch it on
    configure_logging(settings, trace_ids=tracing is not None)
    set_recording(enabled=settings.events_enabled)
    database = sqlalchemy_config(settings)
    tokens = AccessTokens(SigningKeys.from_settings(settings), settings)
    # The users service is made with the app's pools, in the lifespan; it reports changes to the cache, which asks
    # it who may authenticate.
    credentials = CredentialCache(
        lambda user_id: app.state.users.credentials(user_id),  # noqa: PLW0108 - `app` is made below
        database.get_engine(),
        settings.asyncpg_direct_url or "",
    )
    metrics = RequestMetrics(Path(settings.metrics_dir) if settings.metrics_dir else None)

    @asynccontextmanager
    async def connections(app: Litestar) -> AsyncIterator[None]:
        """The asyncpg pools of the hot paths (the primary's and each replica's), and the credential cache's
        notification connection."""
        pool, *replicas = [
            await create_request_pool(url, settings)
            for url in (settings.asyncpg_database_url, *settings.asyncpg_replica_urls)
        ]
        app.state.users = UserService(UserRepository(pool, replicas), on_credentials_changed=credentials.forget_user)
        app.state.idempotency_keys = IdempotencyKeys(pool, settings.idempotency_key_ttl)
        app.state.limits = AttemptLimits(pool, settings.login_failure_window)
        app.state.event_feed = EventFeed(pool)
        app.state.audit_trail = AuditTrail(pool)
        broadcaster = EventBroadcaster(app.state.event_feed, settings.asyncpg_direct_url or "")
        app.state.event_broadcaster = broadcaster
        await broadcaster.start()
        queue = make_queue(settings)
        if tracing is not None:
            tracing.carry_context(queue)
        app.state.jobs = Jobs(queue, settings.job_result_ttl)
        await credentials.start()
        app.state.authenticator = Authenticator(tokens, credentials, database.get_engine())
        app.state.metrics = metrics
        metrics.pools = {
            "asyncpg": asyncpg_pool_use(pool),
            **{f"asyncpg-replica-{n}": asyncpg_pool_use(replica) for n, replica in enumerate(replicas, start=1)},
            "sqlalchemy": sqlalchemy_pool_use(
                database.get_engine(), settings.database_pool_size + settings.database_max_overflow
            ),
        }
        publishing = asyncio.create_task(metrics.publish_forever())
        try:
            async with AsyncExitStack() as optional:
                await optional.enter_async_context(breach_checks(settings))
                if settings.worker_in_process:
                    await optional.enter_async_context(worker_in_process(settings, tracing))
                yield
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
            with suppress(Exception):  # a queue that is down (Redis refuses) must not stop the rest of shutdown
                await queue.disconnect()
            await credentials.stop()
            await broadcaster.stop()
            await asyncio.gather(*(each.close() for each in (pool, *replicas)))

    app = Litestar(
        route_handlers=[HealthController, JwksController, DiscoveryController, MetricsController, API],
        plugins=[SessionsPlugin(config=database), SQLAlchemySerializationPlugin(), AccountsCLIPlugin()],
        lifespan=[connections],
        on_shutdown=[tracing.shutdown] if tracing is not None else [],  # after the lifespan: its spans are exported
        state=State(
            {
                "settings": settings,
                "tokens": tokens,
                "credentials": credentials,
                "client_credentials": ClientCredentialsGrant(tokens, credentials),
                "transactions": RequestTransactions(database),
                "sealer": SecretSealer.from_settings(settings),
            }
        ),
        dependencies={"db_session": session_dependency(), **{name: _from_state(name) for name in SHARED}},
        before_request=before_handler,
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_request_body_bytes,
        openapi_config=openapi_config(),
        request_class=BodyRequest,
        response_class=NegotiatedResponse,
        logging_config=None,
    )
    finish_document(app, REQUEST_EXAMPLES)
    app.asgi_handler = Edge(
        app.asgi_handler,
        metrics=metrics,
        log_requests=settings.access_log,
        body_timeout=settings.request_read_timeout,
    )
    if tracing is not None:  # outermost, so the request's log lines are written inside its span
        app.asgi_handler = tracing.server_spans(app.asgi_handler)
    return app
