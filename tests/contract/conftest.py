"""Fixtures of the contract tests: the document as the running service serves it."""

from __future__ import annotations

import pytest

from tests.contract.clients import operations, read_document


@pytest.fixture(scope="session")
def served_document(live_url: str) -> str:
    """The URL of the OpenAPI document `accounts serve` serves: what a consumer points a generator at."""
    return f"{live_url.rstrip('/')}/schema/openapi.json"


@pytest.fixture(scope="session")
def served_operations(served_document: str) -> dict[str, tuple[str, str]]:
    """Each operationId of the served document, with its method and path."""
    return operations(read_document(served_document))
