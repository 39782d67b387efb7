"""Hostile input on every input of every operation of the served OpenAPI document: path and query parameters,
declared headers, each field of a JSON (and MessagePack) body, each form field, the raw body of a file upload, and
each body as a whole. Whatever comes, the answer is never a 5xx: it is a 4xx problem document (naming the field
when it is a 400 about one), and no table changes. OPTIONS on every path answers anyone, never a 5xx.

The hostile values are the table below, chosen by the input's schema in the document, so a new operation or field
is covered without editing this file. Each request runs as an admin (one login per module), on a database of the
module's own, with every other input valid: path parameters name existing rows, bodies are the document's examples.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from accounts.core.passwords import hash_password
from accounts.jobs.services import Jobs
from accounts.users.jobs import EXPORT_JOB
from accounts.worker import make_queue
from tests.database import CreateDatabase, migrate
from tests.faults.tables import Digest, digest
from tests.integration.auth.support import PASSWORD, insert_user, log_in

Client = AsyncTestClient[Litestar]
Schema = dict[str, Any]

JSON = "application/json"
MSGPACK = "application/msgpack"
FORM = "application/x-www-form-urlencoded"
METHODS = ("get", "put", "post", "patch", "delete")
INVALID_UTF8 = b"ok\xff\xfeok"
"""Bytes of a string that are not UTF-8 (a stray continuation byte and a byte UTF-8 never uses)."""
MAX_BODY_BYTES = 1 << 20
CHECKED_AT_REQUEST = frozenset({"text/csv", "application/octet-stream"})
"""Raw-body media types whose first line the request itself judges (a CSV header; an octet-stream file not starting
with `{` is CSV). An NDJSON file's lines are the import job's to judge: each bad one is a row error in its report
(tests/integration/users/test_imports.py)."""


def example_of(content: Schema) -> Any:
    """A media type's example: its `example`, else its CSV (or first) named example's value."""
    if "example" in content:
        return content["example"]
    examples = content["examples"]
    return (examples.get("csv") or next(iter(examples.values())))["value"]


@dataclass(frozen=True)
class Hostile:
    """A hostile value for any input whose schema `fits`: bytes stand for a string of those (non-UTF-8) bytes."""

    name: str
    fits: Callable[[set[str], Schema], bool]
    value: Callable[[Schema], Any]
    typed_only: bool = False
    """Only where a value has a type of its own (a JSON or MessagePack body): in a URL, form or header, a number
    is a valid string."""


def _text(kinds: set[str], _: Schema) -> bool:
    return "string" in kinds


HOSTILE = (
    Hostile("invalid UTF-8", _text, lambda _: INVALID_UTF8),
    Hostile("NUL", _text, lambda _: "ok\x00ok"),
    Hostile("overlong", _text, lambda schema: "a" * (schema.get("maxLength", 10_000) + 1)),
    Hostile("number for string", _text, lambda _: 12345, typed_only=True),
    Hostile("object for string", _text, lambda _: {"a": "b"}, typed_only=True),
    Hostile("not in the enum", lambda kinds, _: "enum" in kinds, lambda _: "nope"),
    Hostile("not a UUID", lambda kinds, _: "uuid" in kinds, lambda _: "not-a-uuid"),
    Hostile("not a date-time", lambda kinds, _: "date-time" in kinds, lambda _: "yesterday"),
    Hostile("string for integer", lambda kinds, _: "integer" in kinds, lambda _: "12abc"),
    Hostile("fraction for integer", lambda kinds, _: "integer" in kinds, lambda _: 1.5),
    Hostile("past 64 bits", lambda kinds, _: "integer" in kinds, lambda _: 2**64),
    Hostile("above maximum", lambda _, schema: "maximum" in schema, lambda schema: int(schema["maximum"]) + 1),
    Hostile("below minimum", lambda _, schema: "minimum" in schema, lambda schema: int(schema["minimum"]) - 1),
    Hostile("string for boolean", lambda kinds, _: "boolean" in kinds, lambda _: "maybe"),
    Hostile("number for boolean", lambda kinds, _: "boolean" in kinds, lambda _: 2),
    Hostile("object for array", lambda kinds, _: "array" in kinds, lambda _: {"a": "b"}, typed_only=True),
    Hostile("string for array", lambda kinds, _: "array" in kinds, lambda _: "a", typed_only=True),
    Hostile("invalid UTF-8 item", lambda kinds, _: "array" in kinds, lambda _: [INVALID_UTF8], typed_only=True),
    Hostile(
        "too many items",
        lambda _, schema: "maxItems" in schema,
        lambda schema: [schema["items"].get("enum", ["a"])[0]] * (schema["maxItems"] + 1),
        typed_only=True,
    ),
)
"""The spec: what each kind of input must refuse."""

WHOLE_BODIES: dict[str, Callable[[Any], Any]] = {
    "array for object": lambda _: [],
    "string for object": lambda _: "text",
    "number for object": lambda _: 12345,
    "null for object": lambda _: None,
    "unknown field": lambda example: {**example, "zzz_unknown": 1},
}
"""Hostile JSON (and MessagePack) bodies, made from the document's example."""
RAW_BODIES: dict[str, tuple[str | None, bytes]] = {
    "not JSON": (None, b"{not json"),
    "invalid UTF-8 outside strings": (None, b"\xff\xfe"),
    "nested too deeply": (None, b"[" * 100_000),
    "oversized": (None, b" " * (MAX_BODY_BYTES + 1)),
    "unsupported media type": ("text/plain", b"{}"),
}
"""Hostile raw bodies of a JSON operation: (Content-Type if not the operation's, bytes)."""


@dataclass(frozen=True)
class Probe:
    """One hostile request: a valid request to an operation with one input made hostile."""

    where: str
    method: str
    url: str
    headers: dict[str, str | bytes]
    content: bytes | None
    field: str | None = None
    """The input a 400 must name in its `errors`."""


@dataclass(frozen=True)
class Operation:
    """An operation of the document, with what a valid request to it holds."""

    id: str
    method: str
    path: str
    spec: Schema
    document: Schema
    path_values: dict[str, str]

    def probe(
        self,
        where: str,
        field: str | None,
        *,
        path: dict[str, str] | None = None,
        query: str = "",
        headers: dict[str, str | bytes] | None = None,
        media_type: str | None = None,
        content: bytes | None = None,
    ) -> Probe:
        """This operation's valid request (its first media type's example as the body) with what is given instead."""
        media_type = media_type or next(iter(self.body()), None)
        if content is None and media_type is not None:
            content = to_bytes(media_type, example_of(self.body()[media_type]))
        return Probe(
            where=f"{self.id} {where}",
            method=self.method,
            url=self.url(**(path or {})) + (f"?{query}" if query else ""),
            headers={**({"Content-Type": media_type} if media_type else {}), **(headers or {})},
            content=content,
            field=field,
        )

    def url(self, **replaced: str) -> str:
        """The path with a value for each parameter: an existing row's id (the nil UUID for a parameter without
        one in `path_values`), unless `replaced`."""
        values = {**self.path_values, **replaced}
        return self.path.format(**{name: values.get(name, str(uuid.UUID(int=0))) for name in self.path_parameters})

    @property
    def path_parameters(self) -> list[str]:
        return [p["name"] for p in self.spec.get("parameters", []) if p["in"] == "path"]

    def parameters(self, location: str) -> list[Schema]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == location]

    def body(self) -> dict[str, Schema]:
        """The request body's media types and their content (schema, example)."""
        return self.spec.get("requestBody", {}).get("content", {})

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = self.document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        return schema


def kinds_of(schema: Schema) -> set[str]:
    """The types a schema allows (through `oneOf`), with `enum`, `uuid` and `date-time` for those constraints."""
    kinds = {schema["type"]} if isinstance(schema.get("type"), str) else set(schema.get("type", []))
    if "enum" in schema or "const" in schema:
        kinds.add("enum")
    if schema.get("format") in {"uuid", "date-time"}:
        kinds.add(schema["format"])
    for choice in schema.get("oneOf", []) + schema.get("anyOf", []):
        kinds |= kinds_of(choice)
    return kinds


def hostile_values(schema: Schema, *, typed: bool) -> Iterator[tuple[str, Any]]:
    kinds = kinds_of(schema)
    for hostile in HOSTILE:
        if hostile.fits(kinds, schema) and (typed or not hostile.typed_only):
            yield hostile.name, hostile.value(schema)


def as_text(value: Any) -> bytes:
    """A value as it goes in a URL, a form or a header."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


def quoted(value: Any) -> str:
    """A value percent-encoded for a URL or a form, byte by byte (a non-UTF-8 byte stays one: `%FF`)."""
    return quote_from_bytes(as_text(value), safe="")


def to_bytes(media_type: str, body: Any) -> bytes:
    """A body in `media_type`: JSON or MessagePack, a form, or a file (a string) as it is."""
    if media_type == FORM:
        return "&".join(f"{name}={quoted(value)}" for name, value in body.items()).encode()
    if media_type in (JSON, MSGPACK):
        return encode(media_type, body)
    return as_text(body)


_PLACEHOLDER = "~" * len(INVALID_UTF8)


def encode(media_type: str, body: Any) -> bytes:
    """`body` as JSON or MessagePack; a bytes value becomes a string holding exactly those bytes."""
    hostile_bytes: list[bytes] = []

    def placeholder(value: Any) -> Any:
        if isinstance(value, bytes):
            hostile_bytes.append(value)
            return _PLACEHOLDER
        if isinstance(value, dict):
            return {key: placeholder(item) for key, item in value.items()}
        if isinstance(value, list):
            return [placeholder(item) for item in value]
        return value

    encoded = (msgspec.msgpack.encode if media_type == MSGPACK else msgspec.json.encode)(placeholder(body))
    for raw in hostile_bytes:  # same length, so a MessagePack string's header stays right
        encoded = encoded.replace(_PLACEHOLDER.encode(), raw, 1)
    return encoded


# --- probes: how each location carries a hostile value ------------------------------------------------------------


def path_probes(operation: Operation) -> Iterator[Probe]:
    for parameter in operation.parameters("path"):
        name = parameter["name"]
        for hostile, value in hostile_values(parameter["schema"], typed=False):
            yield operation.probe(f"path {name}: {hostile}", name, path={name: quoted(value)})


def query_probes(operation: Operation) -> Iterator[Probe]:
    for parameter in operation.parameters("query"):
        name = parameter["name"]
        for hostile, value in hostile_values(parameter["schema"], typed=False):
            yield operation.probe(f"query {name}: {hostile}", name, query=f"{name}={quoted(value)}")


def header_probes(operation: Operation) -> Iterator[Probe]:
    for parameter in operation.parameters("header"):
        name = parameter["name"]
        for hostile, value in hostile_values(parameter["schema"], typed=False):
            yield operation.probe(f"header {name}: {hostile}", name, headers={name: as_text(value)})


def body_field_probes(operation: Operation) -> Iterator[Probe]:
    """Each field of a JSON or MessagePack body, and of a form."""
    for media_type in (JSON, MSGPACK, FORM):
        content = operation.body().get(media_type)
        if content is None:
            continue
        for name, schema in operation.resolve(content["schema"]).get("properties", {}).items():
            for hostile, value in hostile_values(schema, typed=media_type != FORM):
                body = to_bytes(media_type, {**content["example"], name: value})
                yield operation.probe(
                    f"{media_type} field {name}: {hostile}", name, media_type=media_type, content=body
                )


def file_probes(operation: Operation) -> Iterator[Probe]:
    """A file upload (a `type: string` body) with a hostile value as a column of its first line."""
    for media_type, content in operation.body().items():
        if media_type in CHECKED_AT_REQUEST:
            first, _, rest = str(example_of(content)).partition("\n")
            for hostile, value in hostile_values(content["schema"], typed=False):
                body = f"{first},".encode() + as_text(value) + f"\n{rest}".encode()
                yield operation.probe(f"{media_type} first line: {hostile}", None, media_type=media_type, content=body)


def whole_body_probes(operation: Operation) -> Iterator[Probe]:
    for media_type in (JSON, MSGPACK):
        content = operation.body().get(media_type)
        if content is None:
            continue
        for hostile, make in WHOLE_BODIES.items():
            body = to_bytes(media_type, make(content["example"]))
            name = "zzz_unknown" if hostile == "unknown field" else "body"
            yield operation.probe(f"{media_type} body: {hostile}", name, media_type=media_type, content=body)
    if JSON in operation.body():
        for hostile, (media_type, raw) in RAW_BODIES.items():
            yield operation.probe(f"raw body: {hostile}", None, media_type=media_type or JSON, content=raw)


LOCATIONS: dict[str, Callable[[Operation], Iterator[Probe]]] = {
    "path parameters": path_probes,
    "query parameters": query_probes,
    "headers": header_probes,
    "body fields": body_field_probes,
    "file uploads": file_probes,
    "whole bodies": whole_body_probes,
}


# --- the world: a database of the module's own, an admin logged in once, rows for the path parameters --------------


@dataclass
class World:
    client: Client
    connection: asyncpg.Connection
    admin: dict[str, str]
    document: Schema
    path_values: dict[str, str]

    def operations(self) -> Iterator[Operation]:
        for path, item in self.document["paths"].items():
            for method in METHODS:
                if (spec := item.get(method)) is not None:
                    yield Operation(spec["operationId"], method.upper(), path, spec, self.document, self.path_values)


@pytest.fixture(scope="module")
async def world(create_database: CreateDatabase, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    url = await create_database()
    await migrate(url)
    password_hash = await hash_password(PASSWORD)
    admin = await insert_user(url, password_hash, "admin", admin=True)
    member = await insert_user(url, password_hash, "member")
    api_key_id = uuid.uuid4()
    connection = await asyncpg.connect(url)
    await connection.execute(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, created_at, updated_at)"
        " VALUES ($1, 'old', 'abcdefabcdef', $2, ARRAY['users:read'], now(), now())",
        api_key_id,
        b"\0" * 32,
    )
    app_settings = Settings(
        database_url=url,
        data_dir=str(tmp_path_factory.mktemp("hostile")),
        log_format="json",
        access_log=False,
        max_request_body_bytes=MAX_BODY_BYTES,
    )
    jobs = Jobs(make_queue(app_settings), app_settings.job_result_ttl)  # the app's queue: no worker runs it
    try:
        job_id = (await jobs.submit("export_users", EXPORT_JOB, f"user:{admin.id}", format="ndjson")).id
    finally:
        await jobs.queue.disconnect()
    try:
        async with AsyncTestClient(create_app(app_settings), raise_server_exceptions=False) as client:
            yield World(
                client=client,
                connection=connection,
                admin=(await log_in(client, admin)).headers,
                document=(await client.get("/schema/openapi.json")).json(),
                path_values={"user_id": member.id, "key_id": str(api_key_id), "job_id": str(job_id)},
            )
    finally:
        await connection.close()


def problem_violation(probe: Probe, response: httpx.Response) -> str | None:
    """Why `response` is not the answer a hostile request must get, or None."""
    status = response.status_code
    if not 400 <= status < 500:
        return f"{status} (not a 4xx): {response.text[:300]}"
    content_type = response.headers.get("content-type", "")
    # The OAuth endpoints answer RFC 6749 errors: application/json with `error`, and the problem fields too.
    oauth = content_type.startswith("application/json") and "error" in response.json()
    if not (content_type.startswith("application/problem+json") or oauth):
        return f"{status} is not a problem document: {content_type} {response.text[:300]}"
    problem = response.json()
    if problem.get("status") != status or not all(problem.get(key) for key in ("type", "title", "detail")):
        return f"{status} is not a complete problem document: {problem}"
    if status == 400 and probe.field is not None:
        fields = [error.get("field", "") for error in problem.get("errors", [])]
        if not any(name.lower() == probe.field.lower() or name.startswith(f"{probe.field}[") for name in fields):
            return f"400 does not name `{probe.field}` in its errors: {problem}"
    return None


@pytest.mark.parametrize("location", LOCATIONS)
async def test_hostile_input_is_a_4xx_problem_and_changes_nothing(world: World, location: str) -> None:
    probes = [probe for operation in world.operations() for probe in LOCATIONS[location](operation)]
    violations = []
    before: Digest = await digest(world.connection)
    for probe in probes:
        headers = {**world.admin, **probe.headers}
        response = await world.client.request(probe.method, probe.url, headers=headers, content=probe.content)
        if (reason := problem_violation(probe, response)) is not None:
            violations.append(f"{probe.where}: {reason}")
        if (after := await digest(world.connection)) != before:
            violations.append(f"{probe.where}: answered {response.status_code} and changed the data")
            before = after
    assert probes
    assert not violations, f"{len(violations)} of {len(probes)} hostile requests:\n" + "\n".join(violations)


async def test_options_answers_anyone_on_every_path(world: World) -> None:
    before = await digest(world.connection)
    for path in world.document["paths"]:
        operation = next(operation for operation in world.operations() if operation.path == path)
        response = await world.client.options(operation.url())  # no credentials, as a CORS preflight
        assert response.status_code == 204, (path, response.status_code, response.text)
    assert await digest(world.connection) == before
