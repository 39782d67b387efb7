"""Who is acting in the current request, for the events it causes: set once where the caller is known, read by
`record` (accounts.events.services), so no service threads an actor through its calls.

The request id comes from the logging context (accounts.core.observability.logging). Outside a request (jobs, the
CLI, the scheduled clean-up) the actor is the system.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from litestar.types import ASGIApp, Receive, Scope, Send

from accounts.core.observability.logging import request_id
from accounts.core.security import Principal
from accounts.events.schemas import EventActor

SYSTEM = EventActor(type="system")
_principal: ContextVar[Principal | None] = ContextVar("events_principal", default=None)


def acting_as(principal: Principal | None) -> Token[Principal | None]:
    """Make `principal` the actor of the events recorded from here on in this context (a request's task)."""
    return _principal.set(principal)


def current_actor() -> EventActor:
    """The actor of the current context: its user, API key or service client; else the system."""
    principal = _principal.get()
    if principal is None:
        return SYSTEM
    if principal.api_key_id is not None:
        return EventActor(type="api_key", id=str(principal.api_key_id))
    if principal.client_id is not None:
        return EventActor(type="client", id=str(principal.client_id))
    if principal.user_id is not None:
        return EventActor(type="user", id=str(principal.user_id))
    return SYSTEM


def current_request_id() -> str | None:
    return request_id.get()


def actor_context(app: ASGIApp) -> ASGIApp:
    """Route middleware (after authentication): the authenticated caller becomes the actor of the request's events."""

    async def with_actor(scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        token = _principal.set(user if isinstance(user, Principal) else None)
        try:
            await app(scope, receive, send)
        finally:
            _principal.reset(token)

    return with_actor
