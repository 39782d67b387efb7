"""Checks shared by the HTTP tests: every error is an RFC 9457 problem document."""

from __future__ import annotations

from typing import Any

from httpx import Response


def assert_problem(response: Response, status: int, *, field: str | None = None) -> dict[str, Any]:
    """`response` is a problem document of `status` (problem+json; on the OAuth endpoints, application/json that is
    also an RFC 6749 error); with `field`, its `errors` name that field."""
    assert response.status_code == status, response.text
    problem: dict[str, Any] = response.json()
    media_type = "application/json" if "error" in problem else "application/problem+json"
    assert response.headers["content-type"].startswith(media_type), response.headers
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["type"]
    if field is not None:
        assert field in [error["field"] for error in problem["errors"]], problem
    return problem
