"""Fixtures of the events tests: the auth tests' accounts and logins, and API keys with and without `events:read`."""

from __future__ import annotations

import pytest

from tests.database import insert_api_key
from tests.integration.auth.conftest import admin, admin_account, make_user, password_hash

__all__ = ["admin", "admin_account", "make_user", "password_hash"]


@pytest.fixture
async def reader_key(database_url: str) -> str:
    """An API key that may read the feed (and nothing else)."""
    return await insert_api_key(database_url, ["events:read"])
