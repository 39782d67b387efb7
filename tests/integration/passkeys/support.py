"""What the passkey tests share, fixtures aside: the paths, and the ceremonies driven over HTTP with the software
authenticator (tests/integration/passkeys/authenticator.py). Reusable by any test that needs a user with a passkey:

    passkey = await register_passkey(client, user.headers, authenticator)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.config import Settings
from accounts.passkeys.models import Passkey
from accounts.passkeys.services import PasskeyService
from accounts.users.services import UserService
from tests.integration.auth.support import sql
from tests.integration.passkeys.authenticator import SoftAuthenticator, from_b64url

Client = AsyncTestClient[Litestar]

MY_PASSKEYS = "/api/v1/users/me/passkeys"
REGISTRATION_OPTIONS = f"{MY_PASSKEYS}/registration-options"


def user_passkeys(user_id: str) -> str:
    return f"/api/v1/users/{user_id}/passkeys"


async def registration_options(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    """`{challenge_id, options}` of a new registration ceremony of the caller."""
    response = await client.post(REGISTRATION_OPTIONS, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def send_registration(
    client: Client, headers: dict[str, str], challenge_id: str, credential: dict[str, Any], **fields: Any
) -> httpx.Response:
    return await client.post(
        MY_PASSKEYS, json={"challenge_id": challenge_id, "credential": credential, **fields}, headers=headers
    )


async def register_passkey(
    client: Client, headers: dict[str, str], authenticator: SoftAuthenticator, **fields: Any
) -> dict[str, Any]:
    """A whole registration ceremony over HTTP: the caller's new passkey (the 201's body)."""
    ceremony = await registration_options(client, headers)
    credential = authenticator.create(ceremony["options"])
    response = await send_registration(client, headers, ceremony["challenge_id"], credential, **fields)
    assert response.status_code == 201, response.text
    passkey: dict[str, Any] = response.json()
    return passkey


@dataclass(frozen=True)
class Ceremonies:
    """What the passkey tests act through: the app over HTTP, and the passkey service on sessions of its own (as the
    token endpoint will call it, committing as a request does)."""

    client: Client
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    users: UserService
    database_url: str

    def authenticator(self, **options: Any) -> SoftAuthenticator:
        """A software authenticator on the page of the app's first origin."""
        return SoftAuthenticator(origin=self.settings.origins[0], **options)

    def service(self, session: AsyncSession) -> PasskeyService:
        return PasskeyService(session, self.settings, self.users)

    async def options(self, user_id: UUID | None) -> tuple[UUID, dict[str, Any]]:
        """`authentication_options(user_id)`, committed."""
        async with self.sessions() as session:
            challenge_id, options = await self.service(session).authentication_options(user_id)
            await session.commit()
        return challenge_id, options

    async def authenticate(self, challenge_id: UUID, credential: Any, user_id: UUID | None) -> Passkey:
        """`authenticate(...)`, committed when it succeeds (rolled back when it raises)."""
        async with self.sessions() as session:
            passkey = await self.service(session).authenticate(challenge_id, credential, user_id)
            await session.commit()
        return passkey

    async def sign_in(self, authenticator: SoftAuthenticator, user_id: str | None = None, **get: Any) -> UUID:
        """A whole sign-in ceremony (usernameless without `user_id`, a second factor with it): who it signed in."""
        owner = None if user_id is None else UUID(user_id)
        challenge_id, options = await self.options(owner)
        return (await self.authenticate(challenge_id, authenticator.get(options, **get), owner)).user_id

    async def stored_counter(self, credential_id: str) -> int:
        rows = await sql(
            self.database_url, "SELECT sign_count FROM passkeys WHERE credential_id = $1", from_b64url(credential_id)
        )
        return int(rows[0]["sign_count"])
