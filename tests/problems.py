"""Checks shared by the HTTP tests: every error is an RFC 9457 problem document."""

from __future__ import annotations

from typing import Any

from httpx import Response


def assert_problem(response: Response, status: int, *, field: str | None = None) -> dict[str, Any]:
    """`response` is a problem+json of `status`; with `field`, its `errors` name that field."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["type"]
    if field is not None:
        assert field in [error["field"] for error in problem["errors"]], problem
    return problem
