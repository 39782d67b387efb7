"""A request's database session ends with its transaction (accounts.core.db.RequestTransactions), not with a hook
on the response: after each kind of ending, committed, refused by the handler, or refused before the handler
ran, the app's SQLAlchemy pool has every connection back, none of them left to the garbage collector."""

from __future__ import annotations

import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.auth.support import API_KEYS, PASSWORD, TOKEN, USERS, Client, LoggedIn


def checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]


# A session left open is found by the collector, which terminates its connection with this warning.
@pytest.mark.filterwarnings("error:The garbage collector is trying to clean up:sqlalchemy.exc.SAWarning")
async def test_every_ending_of_a_request_gives_its_connection_back(
    client: Client, admin: LoggedIn, app: Litestar
) -> None:
    username = admin.account.username
    user = {"email": "twice@example.com", "username": "twice"}
    answers = [
        await client.post(USERS, json=user, headers=admin.headers),
        await client.post(USERS, json=user, headers=admin.headers),  # the INSERT fails in the transaction
        await client.post(API_KEYS, json={"name": "billing", "scopes": ["users:read"]}, headers=admin.headers),
        await client.post(API_KEYS, json={"name": "x", "scopes": ["no:such-scope"]}, headers=admin.headers),
        await client.post(TOKEN, data={"grant_type": "password", "username": username, "password": "wrong"}),
        await client.post(TOKEN, data={"grant_type": "password", "username": username, "password": PASSWORD}),
        await client.get(API_KEYS, headers=admin.headers),
    ]
    assert [answer.status_code for answer in answers] == [201, 409, 201, 400, 400, 200, 200]
    assert checked_out(app.state.transactions.config.get_engine()) == 0
