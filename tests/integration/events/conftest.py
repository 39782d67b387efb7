"""Fixtures of the events tests: the auth tests' accounts and logins, the bulk tests' app and worker on each queue
backend, and an API key with `events:read`."""

from __future__ import annotations

import pytest

from tests.database import insert_api_key
from tests.integration.auth.conftest import admin, admin_account, make_user, password_hash
from tests.integration.users.conftest import bulk_backend, bulk_client, bulk_jobs, bulk_settings, bulk_worker

__all__ = [
    "admin",
    "admin_account",
    "bulk_backend",
    "bulk_client",
    "bulk_jobs",
    "bulk_settings",
    "bulk_worker",
    "make_user",
    "password_hash",
]


@pytest.fixture
async def reader_key(database_url: str) -> str:
    """An API key that may read the feed (and nothing else)."""
    return await insert_api_key(database_url, ["events:read"])
