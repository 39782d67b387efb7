"""Errors as RFC 9457 problem documents (`application/problem+json`).

Every error the service answers with goes through `exception_handlers`, so a client sees one shape:
`type`, `title`, `status`, `detail`, and `errors` for field-level validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
import msgspec
import structlog
from advanced_alchemy.exceptions import IntegrityError, NotFoundError, RepositoryError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap
from sqlalchemy import Index
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.schema import ColumnCollectionConstraint

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


def _field_errors(extra: Any) -> list[FieldError]:
    """Litestar's validation `extra` (a list of {key, message, source}) as FieldErrors.

    msgspec reports a missing or unknown body field against the body itself (`data`); the field it
    names in the message is the one the client needs to see.
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
        errors.append(FieldError(field=field, message=message))
    return errors


def _on_validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    errors = _field_errors(exc.extra)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) if errors else str(exc.detail)
    return problem_response(400, detail, type_="/problems/validation-failed", errors=errors or msgspec.UNSET)


def _on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status == 400:  # Litestar reports an undecodable body as a plain 400
        return problem_response(400, str(exc.detail), type_="/problems/malformed-request")
    detail = str(exc.detail) if exc.detail else HTTPStatus(status).description
    return problem_response(status, detail, headers=exc.headers)


def _on_not_found(_: Request[Any, Any, Any], __: NotFoundError) -> Response[Problem]:
    return problem_response(404, "No resource with this id exists.", type_="/problems/not-found")


def _on_integrity_error(
    _: Request[Any, Any, Any], exc: IntegrityError | asyncpg.IntegrityConstraintViolationError
) -> Response[Problem]:
    field = constraint_field(exc)
    if field is None:
        return problem_response(409, "The change conflicts with existing data.", type_="/problems/conflict")
    return problem_response(
        409,
        f"{field} is already taken.",
        type_="/problems/conflict",
        errors=[FieldError(field=field, message="already taken")],
    )


_UNREACHABLE = (
    OSError,
    TimeoutError,
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` comes from not reaching the database (refused, dropped, timed out), not from the query."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, _UNREACHABLE):
            return True
        cause = cause.__cause__
    return False


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


def _on_precondition_failed(_: Request[Any, Any, Any], __: PreconditionFailed) -> Response[Problem]:
    return problem_response(
        412, "The resource changed since you read it: read it again, then retry.", type_="/problems/stale-etag"
    )


def _on_malformed_precondition(_: Request[Any, Any, Any], exc: MalformedPrecondition) -> Response[Problem]:
    return problem_response(400, str(exc), type_="/problems/malformed-request")


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


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if database_unavailable(exc):
        return problem_response(
            503, "The database is unavailable; try again shortly.", headers={"Retry-After": RETRY_AFTER_SECONDS}
        )
    log.exception("unhandled error", method=request.method, path=request.url.path)
    return problem_response(500, "The server failed to handle this request; it has been logged.")


def constraint_field(exc: BaseException) -> str | None:
    """The column(s) of the constraint or index that a database integrity error names, if any."""
    constraint = None
    cause: BaseException | None = exc
    while cause is not None and constraint is None:
        constraint = getattr(cause, "constraint_name", None)
        cause = cause.__cause__
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
    IntegrityError: _on_integrity_error,
    asyncpg.IntegrityConstraintViolationError: _on_integrity_error,
    AuthenticationFailed: _on_authentication_failed,
    TooManyAttempts: _on_too_many_attempts,
    InvalidEmailToken: _on_invalid_email_token,
    PreconditionFailed: _on_precondition_failed,
    MalformedPrecondition: _on_malformed_precondition,
    KeyReused: _on_idempotency_key_reused,
    KeyInUse: _on_idempotency_key_in_use,
    RepositoryError: _on_unexpected,
    Exception: _on_unexpected,
}
