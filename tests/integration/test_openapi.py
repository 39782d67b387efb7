"""The OpenAPI document: valid 3.1, and every operation named, summarised, tagged and with its errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from openapi_spec_validator import validate

from accounts.app import REQUEST_EXAMPLES as EXAMPLES
from accounts.auth import schemas as auth_schemas
from accounts.clients import schemas as client_schemas
from accounts.core.security import ADMIN_SCOPES
from accounts.mfa import schemas as mfa_schemas
from accounts.passkeys import schemas as passkey_schemas
from accounts.users import schemas as user_schemas
from accounts.webhooks import schemas as webhook_schemas

Client = AsyncTestClient[Litestar]
REQUEST_EXAMPLES = {example.__class__.__name__: example for example in EXAMPLES}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


async def document(client: Client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


async def test_document_is_valid_openapi_3_1(client: Client) -> None:
    doc = await document(client)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


async def test_every_operation_has_id_summary_tag_and_problem_responses(client: Client) -> None:
    doc = await document(client)
    operation_ids = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            operation_ids.append(operation.get("operationId"))
            assert operation.get("summary"), where
            assert operation.get("tags"), where
            errors = {code: spec for code, spec in operation["responses"].items() if code.startswith(("4", "5"))}
            for code, spec in errors.items():
                if operation["operationId"] in OAUTH_OPERATIONS:  # RFC 6749 errors: application/json, `error`
                    assert "application/json" in spec["content"], (where, code)
                    # A login whose user has a second factor: `mfa_required` and its `mfa_token` (Auth0's MFA grant).
                    expected = (
                        "MfaRequired" if (operation["operationId"], code) == ("createToken", "403") else "OAuthProblem"
                    )
                    assert spec["content"]["application/json"]["schema"] == {
                        "$ref": f"#/components/schemas/{expected}"
                    }, (where, code)
                    continue
                assert set(spec["content"]) == {"application/problem+json", "application/problem+msgpack"}, (
                    where,
                    code,
                )
                for media in spec["content"].values():
                    assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert len(operation_ids) == len(set(operation_ids))
    assert all(operation_ids)


async def test_user_operations_declare_their_error_codes(client: Client) -> None:
    paths = (await document(client))["paths"]
    expected = {
        ("/api/v1/users", "post"): {"400", "409", "413", "415"},
        ("/api/v1/users", "get"): {"400"},
        ("/api/v1/users/{user_id}", "get"): {"400", "404"},
        ("/api/v1/users/{user_id}", "patch"): {"400", "404", "409", "413", "415"},
        ("/api/v1/users/{user_id}", "delete"): {"400", "404"},
    }
    for (path, method), codes in expected.items():
        assert codes <= set(paths[path][method]["responses"]), (path, method)


async def test_user_schemas_carry_constraints_and_hide_the_password(client: Client) -> None:
    schemas = (await document(client))["components"]["schemas"]
    create = schemas["UserCreate"]
    assert set(create["required"]) == {"email", "username"}
    assert create["properties"]["username"]["maxLength"] == 32
    assert "pattern" in create["properties"]["username"]
    assert not any("password" in name for name in schemas["UserRead"]["properties"])


async def test_docs_ui_is_served(client: Client) -> None:
    response = await client.get("/schema")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


OAUTH_OPERATIONS = {"createToken", "introspectToken", "revokeToken"}
PUBLIC_OPERATIONS = {
    "getLiveness",
    "getReadiness",
    "getAuthorizationServerMetadata",
    "getOpenIdConfiguration",
    "introspectToken",  # its callers authenticate as clients (HTTP Basic or form fields), or by key, in the handler
    "revokeToken",
    "createToken",
    "refreshToken",
    "logOut",
    "register",
    "verifyEmail",
    "requestPasswordReset",
    "confirmPasswordReset",
    "getJwks",
    "startPasskeyLogin",
    "logInWithPasskey",
}


async def test_security_is_declared_on_exactly_the_protected_operations(client: Client) -> None:
    doc = await document(client)
    assert set(doc["components"]["securitySchemes"]) == {"oauth2", "bearer", "apiKey"}
    flows = doc["components"]["securitySchemes"]["oauth2"]["flows"]
    assert set(flows) == {"password", "clientCredentials"}
    assert {flow["tokenUrl"] for flow in flows.values()} == {"/api/v1/auth/token"}
    assert set(flows["clientCredentials"]["scopes"]) == ADMIN_SCOPES
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            requirement = operation.get("security")
            if operation["operationId"] in PUBLIC_OPERATIONS:
                assert not requirement, (method, path)
            else:
                assert requirement == [{"oauth2": []}, {"bearer": []}, {"apiKey": []}], (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


# --- MessagePack twins, request examples, plain schemas, conditional requests ---------------------

REQUEST_BODY_MODULES = (user_schemas, auth_schemas, client_schemas, passkey_schemas, mfa_schemas, webhook_schemas)
OPTIONAL_BY_STANDARD = {"TokenResponse", "TokenIntrospection", "UserInfo", "ServerMetadata"}
"""Success bodies whose standards (RFC 6749 5.1, RFC 7662, OpenID Connect, RFC 8414) make members optional."""
FILE_UPLOAD = "application/octet-stream"
ETAG_OPERATIONS = {"getUser", "updateUser", "getMe", "updateMe"}
IF_MATCH_OPERATIONS = {"updateUser", "updateMe", "deleteUser"}
IF_NONE_MATCH_OPERATIONS = {"getUser", "getMe"}


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every operation of the document by its operationId."""
    return {
        operation["operationId"]: operation
        for item in doc["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def struct_named(name: str) -> type[msgspec.Struct]:
    """The wire Struct a schema is named after, from the modules that define request bodies."""
    for module in REQUEST_BODY_MODULES:
        struct = getattr(module, name, None)
        if isinstance(struct, type) and issubclass(struct, msgspec.Struct):
            return struct
    raise AssertionError(f"no Struct named {name}")


def schema_name(media: dict[str, Any]) -> str:
    ref: str = media["schema"]["$ref"]
    assert ref.startswith("#/components/schemas/"), ref
    return ref.rsplit("/", 1)[-1]


def decode_as(media_type: str, example: Any, struct: type[msgspec.Struct]) -> msgspec.Struct:
    """`example` sent over the wire in `media_type` and decoded by the handler's Struct."""
    if media_type == "application/json":
        return msgspec.json.decode(msgspec.json.encode(example), type=struct)
    if media_type == "application/msgpack":
        return msgspec.msgpack.decode(msgspec.msgpack.encode(example), type=struct)
    assert media_type == "application/x-www-form-urlencoded", media_type
    assert all(isinstance(value, str) for value in example.values()), example
    return msgspec.convert(example, struct, strict=False)


def walk(node: Any, where: str = "$") -> Iterator[tuple[str, Any]]:
    """Every dict and list of the document with its JSON path."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}[{index}]")


async def test_every_request_body_has_an_example_that_decodes_into_its_struct(client: Client) -> None:
    used: set[str] = set()
    for operation_id, operation in operations(await document(client)).items():
        if "requestBody" not in operation:
            continue
        content = operation["requestBody"]["content"]
        assert content, operation_id
        for media_type, media in content.items():
            where = (operation_id, media_type)
            if media_type == FILE_UPLOAD:
                # A raw file, not a Struct (importUsers; tested in tests/integration/users/test_imports.py).
                assert set(media["examples"]) == {"ndjson", "csv"}, where
                continue
            assert "example" in media, where
            name = schema_name(media)
            struct = struct_named(name)
            # Decoded, the published example is the one in REQUEST_EXAMPLES: no field lost on the way
            # (a dropped `null` would turn "clear this field" into "leave it"); in MessagePack too.
            for sent_as in [media_type, *media.get("x-msgpack-content-types", [])[:1]]:
                assert decode_as(sent_as, media["example"], struct) == REQUEST_EXAMPLES[name], (where, sent_as)
            used.add(name)
    assert used == set(REQUEST_EXAMPLES)  # no example for a body nobody sends


async def test_request_examples_pass_the_handlers_own_checks(client: Client) -> None:
    """An example is valid beyond its Struct: an API key example must expire in the future, and stay so
    for as long as the document is published (a year at least), or clients copying it get a 400."""
    example = REQUEST_EXAMPLES["ApiKeyCreate"]
    assert isinstance(example, auth_schemas.ApiKeyCreate)
    assert example.expires_at is not None
    assert example.expires_at > datetime.now(UTC) + timedelta(days=365)


async def test_every_json_request_body_names_its_msgpack_content_types(client: Client) -> None:
    """Only JSON under `content` (generators warn on, or drop, a type they cannot encode); MessagePack beside it."""
    seen = 0
    for operation_id, operation in operations(await document(client)).items():
        content = operation.get("requestBody", {}).get("content", {})
        assert not any("msgpack" in media_type for media_type in content), operation_id
        for media_type, media in content.items():
            expected = ["application/msgpack", "application/vnd.msgpack", "application/x-msgpack"]
            assert media.get("x-msgpack-content-types") == (expected if media_type == "application/json" else None)
            seen += media_type == "application/json"
    assert seen >= 10


async def test_every_json_answer_has_a_msgpack_twin_with_the_same_schema(client: Client) -> None:
    twins = {"application/json": "application/msgpack", "application/problem+json": "application/problem+msgpack"}
    seen = dict.fromkeys(twins, 0)
    for operation_id, operation in operations(await document(client)).items():
        contents = [(code, spec["content"]) for code, spec in operation["responses"].items() if "content" in spec]
        for place, content in contents:
            for json_type, msgpack_type in twins.items():
                where = (operation_id, place, json_type)
                if json_type in content:
                    seen[json_type] += 1
                    assert msgpack_type in content, where
                    assert content[msgpack_type]["schema"] == content[json_type]["schema"], where
                    assert content[msgpack_type].get("example") == content[json_type].get("example"), where
                else:
                    assert msgpack_type not in content, where
    assert seen["application/json"] >= 15
    assert seen["application/problem+json"] >= 50


async def test_only_json_bodies_get_a_msgpack_twin(client: Client) -> None:
    token = operations(await document(client))["createToken"]
    assert set(token["requestBody"]["content"]) == {"application/x-www-form-urlencoded"}


async def test_liveness_is_documented_in_both_media_types(client: Client) -> None:
    content = operations(await document(client))["getLiveness"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "application/msgpack"}
    for media in content.values():
        assert media["schema"] == {"$ref": "#/components/schemas/Health"}


async def test_no_schema_anywhere_has_a_one_of_with_a_single_choice(client: Client) -> None:
    doc = await document(client)
    one_ofs = [(where, node["oneOf"]) for where, node in walk(doc) if isinstance(node, dict) and "oneOf" in node]
    assert one_ofs  # nullable fields are still a oneOf of the type and null
    for where, choices in one_ofs:
        assert len(choices) > 1, where


async def test_unset_able_fields_are_plain_schemas(client: Client) -> None:
    schemas = (await document(client))["components"]["schemas"]
    for name in ("UserUpdate", "ProfileUpdate"):
        properties = schemas[name]["properties"]
        assert properties["username"]["type"] == "string", name
        assert properties["username"]["maxLength"] == 32, name
        assert "oneOf" not in properties["email"], name
    assert schemas["UserUpdate"]["properties"]["is_active"] == {"type": "boolean"}


async def test_emails_have_the_email_format(client: Client) -> None:
    schemas = (await document(client))["components"]["schemas"]
    assert schemas["UserCreate"]["properties"]["email"]["format"] == "email"
    for name in ("UserUpdate", "ProfileUpdate", "RegisterRequest"):
        assert schemas[name]["properties"]["email"]["format"] == "email", name
    assert "extra" not in schemas["UserCreate"]["properties"]["email"]


@pytest.mark.parametrize("name", ["UserRead", "Health", "Jwk", "JwkSet", "UserPage", "TokenPair", "ApiKeyCreated"])
async def test_response_schemas_require_every_property(client: Client, name: str) -> None:
    schema = (await document(client))["components"]["schemas"][name]
    assert schema["properties"]
    assert sorted(schema["required"]) == sorted(schema["properties"]), name


async def test_every_success_response_schema_requires_every_property(client: Client) -> None:
    doc = await document(client)
    schemas = doc["components"]["schemas"]
    names = {
        schema_name(media)
        for operation in operations(doc).values()
        for code, spec in operation["responses"].items()
        if code.startswith("2")
        for media in spec.get("content", {}).values()
        if "$ref" in media["schema"]  # not a file download
    }
    nested = {
        item["items"]["$ref"].rsplit("/", 1)[-1]
        for name in names
        for item in schemas[name]["properties"].values()
        if "$ref" in item.get("items", {})
    }
    assert {"UserRead", "Health", "Jwk"} <= names | nested
    for name in (names | nested) - OPTIONAL_BY_STANDARD:
        assert sorted(schemas[name].get("required", [])) == sorted(schemas[name]["properties"]), name


async def test_user_reads_and_writes_declare_the_etag_header(client: Client) -> None:
    by_id = operations(await document(client))
    for operation_id in ETAG_OPERATIONS:
        header = by_id[operation_id]["responses"]["200"]["headers"]["ETag"]
        assert header["schema"] == {"type": "string"}, operation_id
        assert header["description"], operation_id


async def test_create_user_declares_the_etag_it_sends(client: Client) -> None:
    """POST /api/v1/users answers with an ETag; generated clients only read headers the document declares."""
    created = operations(await document(client))["createUser"]["responses"]["201"]
    assert created.get("headers", {}).get("ETag", {}).get("schema") == {"type": "string"}


async def test_precondition_headers_are_declared_on_exactly_the_right_operations(client: Client) -> None:
    by_id = operations(await document(client))
    declared: dict[str, set[str]] = {"If-Match": set(), "If-None-Match": set()}
    for operation_id, operation in by_id.items():
        for parameter in operation.get("parameters", []):
            if parameter["name"] in declared:
                assert parameter["in"] == "header", operation_id
                assert parameter["required"] is False, operation_id
                assert parameter["description"], operation_id
                declared[parameter["name"]].add(operation_id)
    assert declared == {"If-Match": IF_MATCH_OPERATIONS, "If-None-Match": IF_NONE_MATCH_OPERATIONS}


async def test_412_and_304_are_declared_where_they_can_happen(client: Client) -> None:
    by_id = operations(await document(client))
    for operation_id, operation in by_id.items():
        responses = operation["responses"]
        assert ("412" in responses) == (operation_id in IF_MATCH_OPERATIONS), operation_id
        assert ("304" in responses) == (operation_id in IF_NONE_MATCH_OPERATIONS), operation_id
    for operation_id in IF_MATCH_OPERATIONS:
        assert by_id[operation_id]["responses"]["412"]["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }
    for operation_id in IF_NONE_MATCH_OPERATIONS:
        not_modified = by_id[operation_id]["responses"]["304"]
        assert "content" not in not_modified, operation_id
        assert not_modified["description"], operation_id
