"""openapi-generator, the third generator a consumer may use, takes the served document with its defaults: its
`typescript-fetch` client has every operation, and it warns of nothing but the document being OpenAPI 3.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.contract.clients import generate_typescript_fetch, typescript_fetch_operations


def test_typescript_fetch_defaults_generate_every_operation_without_a_warning(
    served_document: str, served_operations: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    if shutil.which("java") is None:
        pytest.skip("openapi-generator needs Java 11 or newer")
    client = generate_typescript_fetch(tmp_path / "typescript-fetch", served_document)  # raises on any warning

    assert sorted(typescript_fetch_operations(client)) == sorted(served_operations)
