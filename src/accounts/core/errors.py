"""Errors: the one hierarchy the service raises, and how every error becomes an RFC 9457 problem document.

Code below the controllers raises a `ServiceError` subclass, which declares its status and problem `type`; its
message is the `detail`. `exception_handlers` renders those, Litestar's own errors, and everything else (a
database failure by what it means, `database_failure`; a bug as a logged 500) in one shape, JSON or MessagePack:
`type`, `title`, `status`, `detail`, and `errors` naming the fields at fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from http import HTTPStatus
from typing import Any, ClassVar

import asyncpg
import msgspec
import sqlalchemy.exc
import structlog
from advanced_alchemy.exceptions import NotFoundError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import CookieParameter, HeaderParameter, ParameterKwarg, QueryParameter
from litestar.types import ExceptionHandlersMap
from sqlalchemy import Index
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from accounts.core.db import Base
from accounts.core.http.media import PROBLEM_JSON, NegotiatedResponse

RETRY_AFTER_SECONDS = 5
"""What a 503 asks the caller to wait."""

log = structlog.get_logger("accounts.errors")


class FieldError(msgspec.Struct, kw_only=True):
    """One invalid input field."""

    field: str
    """Where the bad value is: a body field (`email`), a query or path parameter (`limit`), a header, or `body`."""
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


class ServiceError(Exception):
    """An error the caller can act on. A subclass declares the status and the problem type; the message is the
    detail, `errors` name the fields at fault, and `headers()` adds what the status calls for."""

    status: ClassVar[int] = HTTPStatus.BAD_REQUEST
    type: ClassVar[str] = "about:blank"
    oauth_error: ClassVar[str | None] = None
    """Its RFC 6749 section 5.2 `error` on the OAuth endpoints; None: the one its status implies (`_OAUTH_CODES`)."""

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors

    def headers(self) -> dict[str, str] | None:
        return None


class MalformedRequest(ServiceError):
    """400: the request cannot be read (a body that is not JSON, a header that is not what it must be)."""

    type = "/problems/malformed-request"


class InvalidInput(ServiceError):
    """400: a field, parameter or header has a value it may not have; `errors` names each."""

    type = "/problems/validation-failed"


class Unauthenticated(ServiceError):
    """401: the credentials are missing, malformed, wrong, expired or revoked."""

    status = HTTPStatus.UNAUTHORIZED
    type = "/problems/unauthenticated"

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error
        """The RFC 6750 error code for `WWW-Authenticate`; None when no credentials were sent."""

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="accounts"'
        if self.error is not None:
            description = str(self).replace('"', "'")
            challenge += f', error="{self.error}", error_description="{description}"'
        return {"WWW-Authenticate": challenge}


class InvalidGrant(Unauthenticated):
    """401 (400 on the OAuth endpoints, as RFC 6749 has it): a password, refresh token or other grant that is wrong,
    expired, revoked or already used."""

    oauth_error = "invalid_grant"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, error="invalid_token")


class InvalidScope(InvalidInput):
    """400: a token request asks for a scope the client does not hold."""

    type = "/problems/invalid-scope"
    oauth_error = "invalid_scope"


class UnsupportedGrantType(InvalidInput):
    """400: a token request with a `grant_type` this server does not offer."""

    type = "/problems/unsupported-grant-type"
    oauth_error = "unsupported_grant_type"


class Forbidden(ServiceError):
    """403: the caller is known but may not do this."""

    status = HTTPStatus.FORBIDDEN
    type = "/problems/forbidden"


class NotFound(ServiceError):
    """404: no resource with this id."""

    status = HTTPStatus.NOT_FOUND
    type = "/problems/not-found"

    def __init__(self, detail: str = "No resource with this id exists.") -> None:
        super().__init__(detail)


class RequestTimeout(ServiceError):
    """408: the request stopped arriving; the connection is closed."""

    status = HTTPStatus.REQUEST_TIMEOUT
    type = "/problems/request-timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class Conflict(ServiceError):
    """409: the change conflicts with the resource's state or with other data."""

    status = HTTPStatus.CONFLICT
    type = "/problems/conflict"


class PreconditionFailed(ServiceError):
    """412: the resource changed since the caller read it (its `If-Match` names another version)."""

    status = HTTPStatus.PRECONDITION_FAILED
    type = "/problems/stale-etag"

    def __init__(self, detail: str = "The resource changed since you read it: read it again, then retry.") -> None:
        super().__init__(detail)


class PayloadTooLarge(ServiceError):
    """413: the body is larger than this operation accepts; nothing of it is kept."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    type = "/problems/too-large"


class UnsupportedMediaType(ServiceError):
    """415: the body's Content-Type is not one this operation reads."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    type = "/problems/unsupported-media-type"


class TooManyAttempts(ServiceError):
    """429: too many attempts; try again after `retry_after` seconds."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    type = "/problems/too-many-attempts"
    oauth_error = "invalid_grant"  # the grant is refused for now; the status and Retry-After say for how long

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(ServiceError):
    """503: something the service depends on (the database, the job queue) cannot be used right now."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "/problems/unavailable"

    def __init__(self, detail: str = "The service cannot reach its database right now; try again shortly.") -> None:
        super().__init__(detail)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


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


class OAuthProblem(Problem, kw_only=True):
    """A problem document that is also an RFC 6749 section 5.2 error: OAuth libraries read `error` and
    `error_description`; the problem fields are for people."""

    error: str
    """`invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`,
    `invalid_scope`, `temporarily_unavailable` or `server_error`."""
    error_description: str


def oauth_error_responses(*status_codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error responses of an OAuth endpoint (token, introspection, revocation)."""
    return {
        code: ResponseSpec(
            data_container=OAuthProblem,
            description=HTTPStatus(code).phrase,
            media_type="application/json",
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
    if isinstance(kwarg, (HeaderParameter, QueryParameter, CookieParameter)):  # Litestar's newer, named kinds
        return kwarg.name or argument
    if isinstance(kwarg, ParameterKwarg):
        return kwarg.header or kwarg.query or kwarg.cookie or argument
    return argument


def _on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    errors = _field_errors(request, exc.extra)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) if errors else str(exc.detail)
    return problem_response(400, detail, type_=InvalidInput.type, errors=errors or msgspec.UNSET)


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500 and status != 503:  # the framework's own failure: its detail is for our log, not the caller
        return _on_unexpected(request, exc)
    detail = str(exc.detail) if exc.detail else HTTPStatus(status).description
    return problem_response(status, detail, type_=_FRAMEWORK_TYPES.get(status, "about:blank"), headers=exc.headers)


# Litestar's own refusals that are the same problems as ours: an undecodable body, one too large. An unknown route
# (404) or method (405) is named by its status alone.
_FRAMEWORK_TYPES = {error.status: error.type for error in (MalformedRequest, PayloadTooLarge, UnsupportedMediaType)}


def _on_service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[Problem]:
    errors = exc.errors if exc.errors is not None else msgspec.UNSET
    return problem_response(exc.status, str(exc), type_=exc.type, errors=errors, headers=exc.headers())


def _on_not_found(request: Request[Any, Any, Any], _: NotFoundError) -> Response[Problem]:
    """advanced-alchemy's `get` of a row that is not there."""
    return _on_service_error(request, NotFound())


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
        return _on_service_error(request, Unavailable())
    log.error("unhandled error", method=request.method, path=request.url.path, exc_info=exc)
    return problem_response(500, "The server failed to handle this request; it has been logged.")


def _conflict(exc: BaseException) -> Response[Problem]:
    field = constraint_field(exc)
    if field is None:
        return problem_response(409, "The change conflicts with existing data.", type_=Conflict.type)
    return problem_response(
        409,
        f"{field} is already taken.",
        type_=Conflict.type,
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
    ServiceError: _on_service_error,
    ValidationException: _on_validation_error,
    HTTPException: _on_http_error,
    NotFoundError: _on_not_found,
    Exception: _on_unexpected,
}

# The `error` of an OAuth endpoint's failure whose class names none, by its status (anything else: invalid_request).
_OAUTH_CODES = {401: "invalid_client", 403: "unauthorized_client", 503: "temporarily_unavailable", 500: "server_error"}
_OAUTH_BAD_REQUESTS = {401, 403, 404, 409, 422}


def _as_oauth_error(handler: Callable[[Request[Any, Any, Any], Any], Response[Any]]) -> Any:
    """`handler`'s problem, told the way RFC 6749 section 5.2 tells it: a refused request is a 400 but a failed client
    authentication (401, with a Basic challenge); what is not about the request's content (a body too large or too
    slow, a limit hit, a failure of ours) keeps its status."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[OAuthProblem]:
        rendered = handler(request, exc)
        problem: Problem = rendered.content
        code = getattr(exc, "oauth_error", None) or _OAUTH_CODES.get(problem.status, "invalid_request")
        status = 400 if problem.status in _OAUTH_BAD_REQUESTS else problem.status
        headers = {name: value for name, value in rendered.headers.items() if name.lower() == "retry-after"}
        headers["Cache-Control"] = "no-store"
        if code == "invalid_client":
            status = 401
            headers["WWW-Authenticate"] = 'Basic realm="accounts"'
        fields = msgspec.structs.asdict(problem) | {"status": status, "title": HTTPStatus(status).phrase}
        body = OAuthProblem(**fields, error=code, error_description=problem.detail)
        return NegotiatedResponse(body, status_code=status, media_type="application/json", headers=headers)

    return handle


oauth_exception_handlers: ExceptionHandlersMap = {
    kind: _as_oauth_error(handler) for kind, handler in exception_handlers.items()
}
"""The exception handlers of the OAuth endpoints: the same problems, with RFC 6749's `error` and statuses."""
