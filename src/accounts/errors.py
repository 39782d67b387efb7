"""Errors as RFC 9457 problem documents (`application/problem+json`).

Every error the service answers with goes through `exception_handlers`, so a client sees one shape:
`type`, `title`, `status`, `detail`, and `errors` for field-level validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import Enum
from http import HTTPStatus
from typing import Any

import asyncpg
import msgspec
import sqlalchemy.exc
import structlog
from advanced_alchemy.exceptions import NotFoundError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, ParameterKwarg
from litestar.types import ExceptionHandlersMap
from sqlalchemy import Index
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from accounts.bodies import BodyTimeout
from accounts.db import Base
from accounts.idempotency import KeyInUse, KeyReused
from accounts.media import PROBLEM_JSON, NegotiatedResponse
from accounts.preconditions import MalformedPrecondition, PreconditionFailed

RETRY_AFTER_SECONDS = "5"

log = structlog.get_logger("accounts.errors")


class FieldError(msgspec.Struct, kw_only=True):
    """One invalid input field."""

    field: str
    """Where the bad value is: a body field (`email`), a query or path parameter (`limit`), or `body`."""
    message: str


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem document."""

    type: str
    """A URI reference naming the kind of problem; `about:blank` when the status says it all."""
    title: str
    status: int
    detail: str
    errors: list[FieldError] | msgspec.UnsetType = msgspec.UNSET
    """Field-level errors, present on validation failures."""


class AuthenticationFailed(Exception):
    """401: the credentials are missing, malformed, wrong, expired or revoked."""

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error
        """The RFC 6750 error code for `WWW-Authenticate`; None when no credentials were sent."""


class InvalidEmailToken(Exception):
    """400: an e-mailed token that is unknown, expired, already used, or for another purpose or address."""


class TooManyAttempts(Exception):
    """429: too many failed attempts; try again after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def problem_responses(*status_codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error responses an operation can give."""
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=HTTPStatus(code).phrase,
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for code in status_codes
    }


def problem_response(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    errors: list[FieldError] | msgspec.UnsetType = msgspec.UNSET,
    headers: Mapping[str, str] | None = None,
) -> NegotiatedResponse:
    problem = Problem(type=type_, title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors)
    return NegotiatedResponse(problem, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_NAMED_FIELD = re.compile(r"field `([^`]+)`")


def _field_errors(request: Request[Any, Any, Any], extra: Any) -> list[FieldError]:
    """Litestar's validation `extra` (a list of {key, message, source}) as FieldErrors.

    msgspec reports a missing or unknown body field against the body itself (`data`); the field it
    names in the message is the one the client needs to see. A parameter is named as the client sends it
    (`If-Match`), not as the handler's argument (`if_match`).
    """
    if not isinstance(extra, list):
        return []
    errors = []
    for item in extra:
        message = str(item.get("message", ""))
        field = str(item.get("key") or item.get("source") or "body")
        if field == "data":
            named = _NAMED_FIELD.search(message)
            field = named.group(1) if named else "body"
        errors.append(FieldError(field=_sent_name(request, field), message=message))
    return errors


def _sent_name(request: Request[Any, Any, Any], argument: str) -> str:
    """The name a parameter travels under: its header, query or cookie alias, else the argument's own name."""
    handler = request.scope.get("route_handler")
    parameter = handler.parsed_fn_signature.parameters.get(argument) if handler is not None else None
    kwarg = parameter.kwarg_definition if parameter is not None else None
    if isinstance(kwarg, HeaderParameter):
        return kwarg.name or argument
    if isinstance(kwarg, ParameterKwarg):
        return kwarg.header or kwarg.query or kwarg.cookie or argument
    return argument


def _on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    errors = _field_errors(request, exc.extra)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) if errors else str(exc.detail)
    return problem_response(400, detail, type_="/problems/validation-failed", errors=errors or msgspec.UNSET)


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500 and status != 503:  # the framework's own failure: its detail is for our log, not the caller
        return _on_unexpected(request, exc)
    if status == 400:  # Litestar reports an undecodable body as a plain 400
        return problem_response(400, str(exc.detail), type_="/problems/malformed-request")
    detail = str(exc.detail) if exc.detail else HTTPStatus(status).description
    return problem_response(status, detail, headers=exc.headers)


def _on_not_found(_: Request[Any, Any, Any], __: NotFoundError) -> Response[Problem]:
    return problem_response(404, "No resource with this id exists.", type_="/problems/not-found")


def _on_authentication_failed(_: Request[Any, Any, Any], exc: AuthenticationFailed) -> Response[Problem]:
    challenge = 'Bearer realm="accounts"'
    if exc.error is not None:
        description = str(exc).replace('"', "'")
        challenge += f', error="{exc.error}", error_description="{description}"'
    return problem_response(401, str(exc), type_="/problems/unauthenticated", headers={"WWW-Authenticate": challenge})


def _on_invalid_email_token(_: Request[Any, Any, Any], exc: InvalidEmailToken) -> Response[Problem]:
    return problem_response(
        400,
        str(exc),
        type_="/problems/invalid-token",
        errors=[FieldError(field="token", message="invalid, expired or already used")],
    )


def _on_too_many_attempts(_: Request[Any, Any, Any], exc: TooManyAttempts) -> Response[Problem]:
    return problem_response(
        429, str(exc), type_="/problems/too-many-attempts", headers={"Retry-After": str(exc.retry_after)}
    )


def _on_body_timeout(_: Request[Any, Any, Any], exc: BodyTimeout) -> Response[Problem]:
    return problem_response(408, str(exc), type_="/problems/request-timeout", headers={"Connection": "close"})


def _on_precondition_failed(_: Request[Any, Any, Any], __: PreconditionFailed) -> Response[Problem]:
    return problem_response(
        412, "The resource changed since you read it: read it again, then retry.", type_="/problems/stale-etag"
    )


def _on_malformed_precondition(_: Request[Any, Any, Any], exc: MalformedPrecondition) -> Response[Problem]:
    return problem_response(
        400,
        str(exc),
        type_="/problems/malformed-request",
        errors=[FieldError(field=exc.header, message="is not `*` or a list of quoted entity tags")],
    )


def _on_idempotency_key_reused(_: Request[Any, Any, Any], __: KeyReused) -> Response[Problem]:
    return problem_response(
        422,
        "This Idempotency-Key was used for a different request: use a new key for a new request.",
        type_="/problems/idempotency-key-reused",
    )


def _on_idempotency_key_in_use(_: Request[Any, Any, Any], __: KeyInUse) -> Response[Problem]:
    return problem_response(
        409,
        "The first request with this Idempotency-Key is still running; retry shortly.",
        type_="/problems/idempotency-key-in-use",
        headers={"Retry-After": "1"},
    )


class DatabaseFailure(Enum):
    """What a failed database call means for the request."""

    CONFLICT = "conflict"
    """The change breaks a unique or foreign-key constraint: 409, naming the field."""
    UNAVAILABLE = "unavailable"
    """The database was not reached, or the call did not finish (connection lost, server shutting down or starting,
    timed out, overloaded, a deadlock): 503 with Retry-After. The work may or may not be committed, so it is never
    acknowledged."""


_CONFLICT_SQLSTATES = frozenset({"23505", "23503"})  # unique_violation, foreign_key_violation
# SQLSTATE classes (two characters) and codes: connection exceptions, insufficient resources, admin and crash
# shutdown, server starting up, statement timeout, serialization failure, deadlock, lock timeout, a primary made
# read-only by a failover.
_UNAVAILABLE_SQLSTATES = frozenset({"08", "53", "57P01", "57P02", "57P03", "57014", "40001", "40P01", "55P03", "25006"})
_UNAVAILABLE_TYPES = (
    OSError,  # refused, reset
    TimeoutError,  # asyncpg's connect and acquire timeouts, asyncio.timeout around a call
    asyncpg.InterfaceError,  # "connection is closed", or a reply lost mid-operation
    asyncpg.InternalClientError,  # the protocol in a state it cannot leave ("cannot switch to state 15")
    sqlalchemy.exc.TimeoutError,  # the pool had no connection to give within DATABASE_POOL_TIMEOUT
    sqlalchemy.exc.DisconnectionError,
)
_BUGS = (asyncpg.exceptions.DataError, asyncpg.exceptions.ClientConfigurationError)  # InterfaceErrors of our making


def database_failure(exc: BaseException) -> DatabaseFailure | None:
    """What `exc` means, decided by the driver's own error (its SQLSTATE, else its type) wherever it sits among
    the wrappers (advanced-alchemy calls every statement error an IntegrityError); None for anything else: a bug."""
    for cause in _causes(exc):
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            if sqlstate in _CONFLICT_SQLSTATES:
                return DatabaseFailure.CONFLICT
            if sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate[:2] in _UNAVAILABLE_SQLSTATES:
                return DatabaseFailure.UNAVAILABLE
            return None
        if isinstance(cause, _UNAVAILABLE_TYPES) and not isinstance(cause, _BUGS):
            return DatabaseFailure.UNAVAILABLE
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: SQLAlchemy's `orig`, then explicit causes, and contexts that were not suppressed."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            current = orig
        elif current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__
        else:
            current = current.__context__


def unavailable_response() -> NegotiatedResponse:
    """503: the database (or the queue) cannot be used right now."""
    return problem_response(
        503,
        "The service cannot reach its database right now; try again shortly.",
        type_="/problems/unavailable",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """Every error without a handler of its own: a database failure by what it means, anything else a 500 logged
    with its traceback. An outage is logged on one line naming the driver's error: during one, every request
    fails the same way, and a traceback each would bury the log."""
    failure = database_failure(exc)
    if failure is DatabaseFailure.CONFLICT:
        return _conflict(exc)
    if failure is DatabaseFailure.UNAVAILABLE:
        *_, driver_error = _causes(exc)
        log.warning(
            "database unavailable",
            method=request.method,
            path=request.url.path,
            error=f"{type(driver_error).__name__}: {' '.join(str(driver_error).split())}"[:500],
        )
        return unavailable_response()
    log.error("unhandled error", method=request.method, path=request.url.path, exc_info=exc)
    return problem_response(500, "The server failed to handle this request; it has been logged.")


def _conflict(exc: BaseException) -> Response[Problem]:
    field = constraint_field(exc)
    if field is None:
        return problem_response(409, "The change conflicts with existing data.", type_="/problems/conflict")
    return problem_response(
        409,
        f"{field} is already taken.",
        type_="/problems/conflict",
        errors=[FieldError(field=field, message="already taken")],
    )


def constraint_field(exc: BaseException) -> str | None:
    """The column(s) of the constraint or index that a database integrity error names, if any."""
    constraint = next((name for cause in _causes(exc) if (name := getattr(cause, "constraint_name", None))), None)
    for table in Base.metadata.tables.values():
        named_items: list[ColumnCollectionConstraint | Index] = [
            *(c for c in table.constraints if isinstance(c, ColumnCollectionConstraint)),
            *table.indexes,
        ]
        for named in named_items:
            if named.name == constraint:
                return ", ".join(column.name for column in named.columns) or None
    return None


exception_handlers: ExceptionHandlersMap = {
    ValidationException: _on_validation_error,
    HTTPException: _on_http_error,
    NotFoundError: _on_not_found,
    AuthenticationFailed: _on_authentication_failed,
    TooManyAttempts: _on_too_many_attempts,
    InvalidEmailToken: _on_invalid_email_token,
    BodyTimeout: _on_body_timeout,
    PreconditionFailed: _on_precondition_failed,
    MalformedPrecondition: _on_malformed_precondition,
    KeyReused: _on_idempotency_key_reused,
    KeyInUse: _on_idempotency_key_in_use,
    Exception: _on_unexpected,
}
