"""create_app(): the one place that wires settings, plugins, routes, middleware and error handling."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar, Request
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from accounts.cli import AccountsCLIPlugin
from accounts.config import Settings
from accounts.db import sqlalchemy_config
from accounts.errors import exception_handlers
from accounts.logging import RequestContextMiddleware, configure_logging
from accounts.system.controllers import HealthController
from accounts.users.controllers import UserController

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def require_json_body(request: Request[Any, Any, Any]) -> None:
    """Reject a body that is not JSON with 415 before anything tries to decode it."""
    if request.method not in _BODY_METHODS or "data" not in request.route_handler.parsed_fn_signature.parameters:
        return
    media_type = request.content_type[0]
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            status_code=415,
            detail=f"Send the body as application/json, not {media_type or 'without a Content-Type'}.",
        )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application; `settings` defaults to those read from the environment."""
    settings = Settings.from_env() if settings is None else settings
    configure_logging(settings)
    app = Litestar(
        route_handlers=[HealthController, UserController],
        plugins=[SQLAlchemyPlugin(config=sqlalchemy_config(settings)), AccountsCLIPlugin()],
        dependencies={"settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True)},
        before_request=require_json_body,
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_request_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Accounts",
            version=version("accounts"),
            description="The system of record for users, credentials, roles and API keys.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
            use_handler_docstrings=False,
        ),
        logging_config=None,
    )
    # Wrap the whole ASGI handler, not route middleware, so 404s and 405s get a request id and a log line too.
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler, log_requests=settings.access_log)
    return app
