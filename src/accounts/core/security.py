"""Who is calling, and what they may do: the Principal a request is made by, and the guards on routes.

The app's authenticator (accounts.auth.authentication) turns credentials into a Principal the first time a request
asks for its caller (`caller`: a guard, or `require_credentials` before the handler); routes read it as
`request.user`. Every route of the API needs credentials unless its `opt` is PUBLIC: `require_credentials` runs
before each of them (deny by default). Not a middleware: a route middleware is two more layers on every request
(Litestar adds an exception handler inside it) and a public route would pay them too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, Protocol, get_args
from uuid import UUID

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler

from accounts.core.errors import Forbidden

Scope = Literal["users:read", "users:write", "tokens:introspect", "events:read"]
"""What an API key or a service client may be allowed to do."""
ADMIN_SCOPES = frozenset(get_args(Scope))
"""What an admin user may do besides being an admin: every scope an API key or a client can hold."""
AUTHENTICATED: list[dict[str, list[str]]] = [{"oauth2": []}, {"bearer": []}, {"apiKey": []}]
"""OpenAPI security requirement of every endpoint that needs credentials: any one of the three schemes."""
PUBLIC = {"exclude_from_auth": True}
"""Route `opt` of the few public routes; every other route needs credentials (deny by default)."""


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """A key kept in the data folder: read, or made with `make` on first use, readable by its owner only. It is
    written whole under a name of its own, then linked into place, so a process starting at the same moment reads
    either nothing (and links its own, which loses) or the whole key, never a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(make())
        try:
            os.link(draft, path)  # atomic, and refused if another process linked its key first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes()


def secret_hash(value: str) -> bytes:
    """SHA-256 of a generated secret (a token, an API key, a client secret): they are 256 random bits, so a fast
    hash is enough and lookups stay cheap."""
    return hashlib.sha256(value.encode()).digest()


def same_hash(value: str, expected: bytes) -> bool:
    """Compare in constant time, so the answer's timing says nothing about how much matched."""
    return hmac.compare_digest(secret_hash(value), expected)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller of a request: a user (by access token), or a service (by API key, or by the access token of a
    service client)."""

    user_id: UUID | None = None
    api_key_id: UUID | None = None
    client_id: UUID | None = None
    session_id: UUID | None = None
    """The session (login) a user's access token belongs to."""
    is_admin: bool = False
    scopes: frozenset[str] = frozenset()

    @property
    def own_user_id(self) -> UUID:
        """The calling user's id; a service key has none (routes for users are guarded by requires_user)."""
        if self.user_id is None:
            raise Forbidden(_NOT_A_USER)
        return self.user_id

    @property
    def identity(self) -> str:
        """Who owns what this caller creates (idempotency keys, jobs): `user:<id>`, `key:<id>` or `client:<id>`."""
        if self.api_key_id is not None:
            return f"key:{self.api_key_id}"
        if self.client_id is not None:
            return f"client:{self.client_id}"
        return f"user:{self.user_id}"

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def may_access_user(self, user_id: UUID, scope: str) -> bool:
        """Admins and keys with `scope` reach anyone; a user reaches only themselves."""
        return self.may(scope) or self.user_id == user_id


AuthenticatedRequest = Request[Principal, None, State]
"""The request of an authenticated route: `request.user` is the caller (read directly, no injection)."""

Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]  # type: ignore[type-arg]
_NOT_A_USER = "This needs a user's access token, not an API key or a service client's token."


class Authenticator(Protocol):
    async def authenticate(self, authorization: str | None, api_key: str | None) -> Principal: ...


async def caller(connection: ASGIConnection) -> Principal:  # type: ignore[type-arg]
    """The request's caller, authenticated (401 without valid credentials) by the app's `state.authenticator` the
    first time it is asked for, and kept as `scope["user"]` (`request.user`) for the guards and the handler."""
    principal: Principal | None = connection.scope.get("user")
    if principal is None:
        authenticator: Authenticator = connection.app.state.authenticator
        headers = connection.headers
        principal = await authenticator.authenticate(
            headers.get("authorization") or None, headers.get("x-api-key") or None
        )
        connection.scope["user"] = principal
    return principal


async def require_credentials(connection: ASGIConnection) -> None:  # type: ignore[type-arg]
    """Deny by default, before every handler of the API: its caller is authenticated unless the route is PUBLIC.
    OPTIONS passes: Litestar answers it itself, for anyone (CORS preflights carry no credentials)."""
    if connection.scope.get("method") != "OPTIONS" and not connection.route_handler.opt.get("exclude_from_auth"):
        await caller(connection)


def _guard(check: Callable[[Principal], str | None]) -> Guard:
    """A guard refusing (403) when `check(caller)` gives a reason, authenticating the caller first (guards run
    before `require_credentials`). OPTIONS passes, as there.

    A coroutine function though it never waits: Litestar runs a plain function guard in its thread pool, a hand-off
    to a thread and back on every guarded request (`make bench` scenario 3, the list: 429 -> 360 us of server CPU)."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        if connection.scope.get("method") == "OPTIONS":
            return
        if (reason := check(await caller(connection))) is not None:
            raise Forbidden(reason)

    return guard


def requires(scope: str) -> Guard:
    """A guard: the caller holds `scope` (admins hold every scope)."""
    return _guard(lambda caller: None if caller.may(scope) else f"This needs the `{scope}` scope or an admin.")


requires_admin = _guard(lambda caller: None if caller.is_admin else "This needs an admin.")
"""A guard: the caller is an admin user."""

requires_user = _guard(lambda caller: None if caller.user_id is not None else _NOT_A_USER)
"""A guard: the caller is a user (an access token), not a service key."""
