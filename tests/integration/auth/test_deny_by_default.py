"""Deny by default: every operation the app serves, called without credentials, is a 401 before its handler or its
body is looked at, unless it is one of the few public ones; and the caller of an authenticated request is the actor
of the events it causes, in that request only."""

from __future__ import annotations

import re
import uuid

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from accounts.core.security import PUBLIC
from accounts.events.context import SYSTEM, current_actor
from tests.database import insert_api_key_with_id

PASSWORD = "correct horse battery staple"

PUBLIC_OPERATIONS = {
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /.well-known/jwks.json",
    "GET /.well-known/oauth-authorization-server",
    "GET /.well-known/openid-configuration",
    "POST /api/v1/auth/token",
    "POST /api/v1/auth/introspect",
    "POST /api/v1/auth/revoke",
    "POST /api/v1/auth/refresh",
    "POST /api/v1/auth/logout",
    "POST /api/v1/auth/register",
    "POST /api/v1/auth/verify-email",
    "POST /api/v1/auth/password-reset",
    "POST /api/v1/auth/password-reset/confirm",
    "POST /api/v1/auth/passkey/options",
    "POST /api/v1/auth/passkey/login",
}
"""Each public operation, named here so that making one public is a decision this test sees."""


def operations(app: Litestar) -> list[tuple[str, str, bool]]:
    """(method, path with its parameters filled in, public) of every operation, OpenAPI's own pages left out."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/schema"):
            continue
        path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
        for handler in route.route_handlers:
            public = handler.opt.get("exclude_from_auth", False) is PUBLIC["exclude_from_auth"]
            found += [(method, path, public) for method in handler.http_methods if method not in {"OPTIONS", "HEAD"}]
    return found


def test_the_public_operations_are_the_listed_ones(app: Litestar) -> None:
    named = {f"{method} {re.sub(r'[0-9a-f-]{36}', '{id}', path)}" for method, path, public in operations(app) if public}
    assert named == PUBLIC_OPERATIONS


async def test_every_other_operation_needs_credentials(client: AsyncTestClient[Litestar], app: Litestar) -> None:
    guarded = [(method, path) for method, path, public in operations(app) if not public]
    assert len(guarded) > 50
    answers = {}
    for method, path in guarded:
        # A body that would be refused if it were read: the 401 comes first.
        response = await client.request(method, path, content=b"\xff\x00", headers={"content-type": "text/plain"})
        answers[f"{method} {path}"] = (response.status_code, response.headers.get("www-authenticate", ""))
    assert {name: answer for name, answer in answers.items() if answer[0] != 401 or not answer[1]} == {}


async def test_wrong_credentials_are_refused_on_routes_with_and_without_guards(
    client: AsyncTestClient[Litestar],
) -> None:
    for method, path in (("GET", "/api/v1/users"), ("GET", f"/api/v1/users/{uuid.uuid4()}")):
        for headers in ({"authorization": "Bearer not-a-token"}, {"x-api-key": "accs_not-a-key"}):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)


async def test_a_requests_caller_is_its_events_actor_and_no_one_elses(
    client: AsyncTestClient[Litestar], database_url: str
) -> None:
    identity, key = await insert_api_key_with_id(database_url, ["users:write", "events:read"])
    created = await client.post(
        "/api/v1/users", json={"email": "actor@example.com", "username": "actor"}, headers={"x-api-key": key}
    )
    assert created.status_code == 201, created.text
    public = await client.post(
        "/api/v1/auth/register", json={"email": "self@example.com", "username": "self", "password": PASSWORD}
    )
    assert public.status_code == 201, public.text
    events = await client.get("/api/v1/events", headers={"x-api-key": key})
    assert events.status_code == 200, events.text
    actors = {item["subject"]["id"]: item["actor"] for item in events.json()["items"] if item["type"] == "user.created"}
    assert actors == {
        created.json()["id"]: {"type": "api_key", "id": identity.removeprefix("key:")},
        public.json()["id"]: {"type": "system", "id": None},  # no one authenticated a sign-up
    }
    assert current_actor() == SYSTEM  # nothing of a request's caller is left in its caller's context
