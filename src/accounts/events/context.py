"""Who is acting in the current request, for the events it causes: its authenticated caller, read by `record`
(accounts.events.services) from the request being served (accounts.core.http.edge), so no service threads an actor
through its calls. Outside a request (jobs, the CLI, the scheduled clean-up), and in a request no one authenticated
(a sign-up), the actor is the system.
"""

from __future__ import annotations

from accounts.core.http.edge import current_request
from accounts.core.observability.logging import request_id
from accounts.core.security import Principal
from accounts.events.schemas import EventActor

SYSTEM = EventActor(type="system")


def current_actor() -> EventActor:
    """The actor of the current context: its user, API key or service client; else the system."""
    scope = current_request.get()
    principal = scope.get("user") if scope is not None else None
    if not isinstance(principal, Principal):
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
