"""The OpenAPI document: its configuration, and the finishing touches Litestar does not make itself.

Clients are generated from this document, so it states exactly what the service does, in a form generators take
with their default settings: every answer in both media types (JSON and MessagePack), every request body as JSON
with the MessagePack Content-Types it may also be sent as, an example for every request body, and plain schemas
where Litestar would wrap one type in a `oneOf` of one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import msgspec
from litestar import Litestar, Router
from litestar.datastructures import ResponseHeader
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import (
    Components,
    OAuthFlow,
    OAuthFlows,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from accounts.core.http.idempotency import DESCRIPTION as IDEMPOTENCY_DESCRIPTION
from accounts.core.http.idempotency import HEADER as IDEMPOTENCY_HEADER
from accounts.core.http.idempotency import KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from accounts.core.http.idempotency import IdempotencyMiddleware
from accounts.core.http.media import JSON, MSGPACK, MSGPACK_TYPES, PROBLEM_JSON, PROBLEM_MSGPACK
from accounts.core.security import PUBLIC

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "oauth2": SecurityScheme(
        type="oauth2",
        description="A user logs in with e-mail (or username) and password; a service client with its client id and "
        "secret. The token goes in `Authorization: Bearer`.",
        flows=OAuthFlows(
            password=OAuthFlow(
                token_url="/api/v1/auth/token",
                refresh_url="/api/v1/auth/refresh",
                scopes={},
            ),
            client_credentials=OAuthFlow(
                token_url="/api/v1/auth/token",
                scopes={
                    "users:read": "Read any user",
                    "users:write": "Create, update, delete and import users",
                    "tokens:introspect": "Introspect tokens (RFC 7662)",
                    "events:read": "Read the event feed and its stream",
                },
            ),
        ),
    ),
    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT or API key"),
    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
}

LOCATION_HEADER = ResponseHeader(
    name="Location",
    documentation_only=True,
    description="The URL of the created resource.",
    value="/api/v1/users/01936f3e-2a4b-7c3d-8e5f-a1b2c3d4e5f6",  # gives the header its schema (a string)
)

_USES_DATABASE = "uses_database"
NO_DATABASE = {_USES_DATABASE: False}
"""Route `opt` of the few routes that reach neither the database nor the job queue, not even to authenticate: the
only operations documented without a 503."""

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_MSGPACK_TWIN = {JSON: MSGPACK, PROBLEM_JSON: PROBLEM_MSGPACK}
MSGPACK_CONTENT_TYPES = (MSGPACK, *sorted(MSGPACK_TYPES - {MSGPACK}))
"""The Content-Types a JSON request body may also be sent as, in MessagePack: the common name first."""


@dataclass
class JsonBody(OpenAPIMediaType):
    """The media type of a JSON request body, naming the MessagePack Content-Types of the same body in an extension.
    Under `content` they would be bodies of their own, which generators cannot encode: they warn, or drop the
    operation."""

    msgpack_content_types: list[str] = field(
        default_factory=lambda: list(MSGPACK_CONTENT_TYPES), metadata={"alias": "x-msgpack-content-types"}
    )


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Accounts",
        version=version("accounts"),
        description="The system of record for users, credentials, roles and API keys. Every JSON body may also be "
        f"sent and received as MessagePack (`{MSGPACK}`), chosen by `Content-Type` and `Accept`: answers list "
        "the MessagePack media types beside JSON, request bodies name them in `x-msgpack-content-types`.",
        path="/schema",
        # The document and its pages are public: the one router whose routes skip the authentication before handlers.
        openapi_router=Router(path="/schema", route_handlers=[], opt=PUBLIC, include_in_schema=False),
        render_plugins=[ScalarRenderPlugin()],
        use_handler_docstrings=False,
        operation_id_creator=_operation_id,
        components=Components(security_schemes=SECURITY_SCHEMES),
    )


def _operation_id(handler: HTTPRouteHandler, *_: object) -> str:
    """A route's `name` is its operationId: one name for `route_reverse` (Location headers) and for clients."""
    if handler.name is None:
        msg = f"the route {handler} has no name: every operation needs one, for its operationId"
        raise ValueError(msg)
    return handler.name


def finish_document(app: Litestar, request_examples: Iterable[msgspec.Struct]) -> None:
    """Complete the document Litestar built for `app`, in place (it is built once and served as is); each request
    body gets the example of its Struct from `request_examples` (a test checks each decodes into its Struct)."""
    examples = {example.__class__.__name__: msgspec.to_builtins(example) for example in request_examples}
    document = app.openapi_schema
    handlers: dict[str, HTTPRouteHandler] = {
        handler.name: handler
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if handler.name is not None
    }
    for schema in (document.components.schemas or {}).values():
        _flatten_single_choices(schema)
    for path_item in (document.paths or {}).values():
        for method in _METHODS:
            if (operation := getattr(path_item, method)) is not None:
                handler = handlers[str(operation.operation_id)]
                if IdempotencyMiddleware in (handler.middleware or []):
                    _declare_idempotency(operation)
                _declare_common_answers(operation, uses_database=handler.opt.get(_USES_DATABASE, True))
                _finish_operation(operation, examples)


_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0), description="Seconds to wait before trying again."
)
_HEADERS_OF_STATUS: dict[str, dict[str, OpenAPIHeader | Reference]] = {
    "304": {"ETag": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description="The version the caller has.")},
    "401": {
        "WWW-Authenticate": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING),
            description='The RFC 6750 challenge: `Bearer realm="accounts"`, with `error` when credentials were sent.',
        )
    },
    "429": {"Retry-After": _RETRY_AFTER},
    "503": {"Retry-After": _RETRY_AFTER},
}
"""Headers every answer of a status carries, whichever operation gives it."""
_BODY_PROBLEMS = {
    "400": "The body is malformed or breaks the schema; `errors` names the fields",
    "408": "The request body stopped arriving (REQUEST_READ_TIMEOUT); the connection is closed",
    "413": "The request body is larger than this operation accepts",
    "415": "The body's Content-Type is not one this operation reads",
}
"""What any operation with a request body can answer: it is read, decoded and validated before the handler runs."""
_UNAVAILABLE = "The database or the job queue cannot be used right now; retry after `Retry-After` seconds"


def _problem(description: str) -> OpenAPIResponse:
    problem = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))
    return OpenAPIResponse(description=description, content={PROBLEM_JSON: problem})


def _declare_common_answers(operation: Operation, *, uses_database: bool) -> None:
    """The answers the app gives for every operation of a kind, rather than its handler: declared here once."""
    responses = operation.responses = operation.responses if operation.responses is not None else {}
    if operation.request_body is not None:
        for status, description in _BODY_PROBLEMS.items():
            responses.setdefault(status, _problem(description))
    if uses_database:
        responses.setdefault("503", _problem(_UNAVAILABLE))
    for status, headers in _HEADERS_OF_STATUS.items():
        response = responses.get(status)
        if isinstance(response, OpenAPIResponse):
            response.headers = {**(response.headers or {}), **headers}


def _declare_idempotency(operation: Operation) -> None:
    operation.parameters = [
        *(operation.parameters or []),
        Parameter(
            name=IDEMPOTENCY_HEADER,
            param_in=ParamType.HEADER,
            required=False,
            description=IDEMPOTENCY_DESCRIPTION,
            schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN),
        ),
    ]
    responses = operation.responses = operation.responses if operation.responses is not None else {}
    for status, description in (
        ("409", "Conflict (also: the first request with this Idempotency-Key is still running)"),
        ("422", "The Idempotency-Key was used for a different request"),
    ):
        responses.setdefault(status, _problem(description))
    in_use = responses["409"]
    if isinstance(in_use, OpenAPIResponse):  # the first request with the key still running: retry after a second
        in_use.headers = {**(in_use.headers or {}), "Retry-After": _RETRY_AFTER}


def _finish_operation(operation: Operation, examples: dict[str, Any]) -> None:
    body = operation.request_body
    if body is not None and not isinstance(body, Reference):
        for media in body.content.values():
            if isinstance(media.schema, Reference) and media.example is None:
                media.example = examples.get(media.schema.ref.rsplit("/", 1)[-1])
        if (json := body.content.get(JSON)) is not None:
            body.content[JSON] = JsonBody(**vars(json))
    for response in (operation.responses or {}).values():
        if not isinstance(response, Reference) and response.content:
            _add_msgpack_twins(response.content)


def _add_msgpack_twins(content: dict[str, OpenAPIMediaType]) -> None:
    for media_type, twin in _MSGPACK_TWIN.items():
        if media_type in content:
            content.setdefault(twin, content[media_type])


def _flatten_single_choices(schema: Schema | Reference) -> None:
    """`oneOf: [X]` (how Litestar shows an UNSET-able field) becomes X itself, for every property."""
    if isinstance(schema, Reference):
        return
    for prop in (schema.properties or {}).values():
        if isinstance(prop, Schema) and prop.one_of is not None and len(prop.one_of) == 1:
            (only,) = prop.one_of
            if isinstance(only, Schema):
                prop.one_of = None
                for name, value in _set_fields(only).items():
                    setattr(prop, name, value)


_UNSET_SCHEMA = Schema()


def _set_fields(schema: Schema) -> dict[str, Any]:
    return {name: value for name, value in vars(schema).items() if value != getattr(_UNSET_SCHEMA, name)}
