"""The OpenAPI document: valid 3.1, and every operation named, summarised, tagged and with its errors."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from openapi_spec_validator import validate

Client = AsyncTestClient[Litestar]
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


PUBLIC_OPERATIONS = {
    "getLiveness",
    "getReadiness",
    "createToken",
    "refreshToken",
    "logOut",
    "register",
    "getJwks",
}


async def test_security_is_declared_on_exactly_the_protected_operations(client: Client) -> None:
    doc = await document(client)
    assert set(doc["components"]["securitySchemes"]) == {"oauth2", "bearer", "apiKey"}
    flow = doc["components"]["securitySchemes"]["oauth2"]["flows"]["password"]
    assert flow["tokenUrl"] == "/api/v1/auth/token"
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
