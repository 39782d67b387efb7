"""Property-based contract test: schemathesis generates requests from the OpenAPI document, valid and invalid, with
JSON and MessagePack bodies, sends them to the app in-process, and checks every answer against the document: no
5xx, a documented status, a documented media type, and a body of the documented schema.

The document is the snapshot, which test_openapi_snapshot keeps equal to the served one: schemathesis must have
the operations when the tests are collected, before any fixture gives a database (its fixture-based loader fails on
pytest 9.2). A request body is described as JSON, naming its MessagePack Content-Types in `x-msgpack-content-types`;
schemathesis is given the first of them as a media type of the body, so it sends MessagePack bodies as well.
Bounded for `make test`: a fixed seed and MAX_EXAMPLES per operation, on a database of its own. Reproduce a failure
with the curl command in its report; explore further with a higher MAX_EXAMPLES.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar

from accounts.app import create_app
from accounts.config import Settings
from accounts.core.http.idempotency import HEADER as IDEMPOTENCY_HEADER
from accounts.core.http.idempotency import KEY_PATTERN
from accounts.core.passwords import hash_password
from tests.database import CreateDatabase, migrate
from tests.integration.auth.support import PASSWORD, TOKEN, bearer, insert_user

SNAPSHOT = Path(__file__).with_name("openapi.json")
SEED = 20261201
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "50"))
"""Examples per operation in the fuzzing phase (the examples and coverage phases add their own fixed cases)."""
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MSGPACK = "application/msgpack"
IDEMPOTENCY_KEY = re.compile(KEY_PATTERN)
CALLERS = ("admin", "member")
CALLER = {"logOutEverywhere": "member"}
"""Who calls an operation that needs credentials, when not the admin: logging out everywhere revokes the caller's
tokens, so it runs as a user of its own and the admin's token stays valid for every other operation."""

CONFIG = {
    "seed": SEED,
    "base-url": "http://testserver",
    "generation": {
        "max-examples": MAX_EXAMPLES,
        "database": "none",  # nothing written to .hypothesis/: every run is the same run
        "with-security-parameters": False,  # the credentials are the admin's, not generated
    },
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
    },
}


@schemathesis.serializer(MSGPACK)
def msgpack_body(_: schemathesis.SerializationContext, value: Any) -> bytes:
    """A generated body as MessagePack; a value MessagePack cannot hold (an integer past 64 bits) goes as JSON text,
    which the service must refuse as undecodable."""
    try:
        return msgspec.msgpack.encode(value)
    except OverflowError:
        return msgspec.json.encode(value)


@schemathesis.deserializer(MSGPACK, "application/problem+msgpack")
def msgpack_answer(_: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return msgspec.msgpack.decode(response.content)


schemathesis.serializer.alias("application/x-ndjson", "text/plain")  # an import file is text, as CSV is


def with_msgpack_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each request body's MessagePack form (its first `x-msgpack-content-types`) beside its JSON."""
    for path_item in document["paths"].values():
        for operation in path_item.values():
            content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
            for media in list(content.values()):
                for media_type in media.get("x-msgpack-content-types", [])[:1]:
                    content.setdefault(media_type, media)
    return document


STREAMS = ["streamEvents", "streamJobEvents"]
"""Operations answering an endless `text/event-stream`, which an in-process call would wait on forever; their bad
input and their streams are tested in tests/integration/events (a real server and a streaming client)."""
schema = schemathesis.openapi.from_dict(
    with_msgpack_bodies(json.loads(SNAPSHOT.read_text())), config=schemathesis.Config.from_dict(CONFIG)
).exclude(operation_id=STREAMS)


@pytest.fixture(scope="module")
async def fuzzed_settings(create_database: CreateDatabase, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of an app on a database of this module's own (the session's is never touched)."""
    url = await create_database()
    await migrate(url)
    password_hash = await hash_password(PASSWORD)
    for username in CALLERS:
        await insert_user(url, password_hash, username, admin=username == "admin")
    return Settings(
        database_url=url,
        data_dir=str(tmp_path_factory.mktemp("schemathesis")),
        log_format="json",
        access_log=False,
        # Wrong current passwords and unknown logins come by the hundred; the limits have tests of their own.
        login_max_failures_per_account=1000,
        login_max_failures_per_address=100_000,
    )


@pytest.fixture(scope="module")
def fuzzed_app(fuzzed_settings: Settings) -> Litestar:
    return create_app(fuzzed_settings)


@pytest.fixture(scope="module")
def credentials(fuzzed_app: Litestar) -> dict[str, dict[str, str]]:
    """The `Authorization` header of each caller, from the token endpoint."""
    headers = {}
    for username in CALLERS:
        grant = {"grant_type": "password", "username": username, "password": PASSWORD}
        response = schema[TOKEN]["POST"].Case(body=grant, media_type=FORM).call(app=fuzzed_app)
        assert response.status_code == 200, response.text
        headers[username] = bearer(response.json()["access_token"])
    return headers


STATIC_PATHS = frozenset(path for path in json.loads(SNAPSHOT.read_text())["paths"] if "{" not in path)
"""Paths without parameters: a generated id that spells one (`/api/v1/users/imports` for `/api/v1/users/{user_id}`)
is that path's, and its route answers (405 to a method it does not take), not the operation being tested."""


def call_and_validate(
    case: schemathesis.Case, app: Litestar, credentials: dict[str, dict[str, str]], *, accept: str
) -> None:
    if case.path_parameters and case.formatted_path in STATIC_PATHS:
        return
    operation = case.operation.definition.raw
    headers = credentials[CALLER.get(operation["operationId"], "admin")] if operation.get("security") else {}
    if IDEMPOTENCY_KEY.fullmatch(case.headers.get(IDEMPOTENCY_HEADER, "")):
        # Schemathesis reuses a key across cases, and a key reused with another body is a 422 by design, which
        # would hide every later body: a valid key is made unique, an invalid one is sent as generated.
        headers = {**headers, IDEMPOTENCY_HEADER: str(uuid.uuid4())}
    case.call_and_validate(app=app, headers={**headers, "Accept": accept})


# A WebAuthn answer's nested base64url members are rarely all generated valid: most of its examples are filtered out
# (Hypothesis' filter_too_much), and the cases left are what is checked.
@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
def test_every_answer_conforms_to_the_document(
    case: schemathesis.Case, fuzzed_app: Litestar, credentials: dict[str, dict[str, str]]
) -> None:
    """Answers in JSON, except to a MessagePack body: a MessagePack caller asks for MessagePack answers."""
    call_and_validate(case, fuzzed_app, credentials, accept=MSGPACK if case.media_type == MSGPACK else JSON)


@schema.include(lambda context: "requestBody" not in context.operation.definition.raw).parametrize()
def test_every_answer_without_a_request_body_conforms_in_messagepack(
    case: schemathesis.Case, fuzzed_app: Litestar, credentials: dict[str, dict[str, str]]
) -> None:
    """The operations without a body, whose cases the test above only sends asking for JSON."""
    call_and_validate(case, fuzzed_app, credentials, accept=MSGPACK)
