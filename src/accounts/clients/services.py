"""Service clients: the one service that writes `oauth_clients`.

A client's secret is 256 random bits with a recognisable prefix, returned once and kept only as its SHA-256
(accounts.auth.credentials); a rotation keeps the previous secret working for an overlap. A client may also register
public keys (a JWK Set, accounts.clients.keys) to authenticate with `private_key_jwt` instead. Every change is
reported through `on_changed(client_id)`, so this worker's credential cache forgets the client at once; the other
workers hear it from the database (the trigger of migrations 0010 and 0015)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.clients.keys import to_stored, verification_keys
from accounts.clients.models import OAuthClient
from accounts.clients.schemas import ClientJwkSet, OAuthClientCreate, OAuthClientRead
from accounts.core.db import PRIMARY
from accounts.core.security import secret_hash
from accounts.events.services import Subject, record

CLIENT_SECRET_PREFIX = "accs_"  # noqa: S105 - the public start of every secret, not one


def new_client_secret() -> str:
    """`accs_<43 url-safe characters>`: 256 random bits, recognisable by secret scanners."""
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


class OAuthClientService(SQLAlchemyAsyncRepositoryService[OAuthClient]):
    class Repo(SQLAlchemyAsyncRepository[OAuthClient]):
        model_type = OAuthClient

    repository_type = Repo

    def __init__(self, session: AsyncSession, on_changed: Callable[[UUID], None]) -> None:
        super().__init__(session=session)
        self.on_changed = on_changed

    async def create_client(self, data: OAuthClientCreate, created_by: UUID | None) -> tuple[OAuthClient, str]:
        """A new client; the secret is returned once and only its hash is kept."""
        if data.jwks is not None:
            verification_keys(data.jwks)
        secret = new_client_secret()
        values = {
            "name": data.name,
            "scopes": sorted(set(data.scopes)),
            "secret_hash": secret_hash(secret),
            "jwks": to_stored(data.jwks),
            "created_by": created_by,
        }
        client = await self.create(values)
        await record(self.repository.session, "client.created", Subject("client", client.id), _described(client))
        return client, secret

    async def rotate_secret(self, client_id: UUID, overlap_seconds: int) -> tuple[OAuthClient, str]:
        """A new secret; the current one keeps working for `overlap_seconds` (the one before it stops now)."""
        # On the primary, locked: two rotations at once must not both keep the same previous secret.
        client = await self.repository.get(client_id, bind_group=PRIMARY, with_for_update=True)
        secret = new_client_secret()
        now = datetime.now(UTC)
        values = {
            "secret_hash": secret_hash(secret),
            "previous_secret_hash": client.secret_hash if overlap_seconds else None,
            "previous_secret_expires_at": now + timedelta(seconds=overlap_seconds) if overlap_seconds else None,
            "secret_rotated_at": now,
        }
        client = await self.update(values, item_id=client_id, bind_group=PRIMARY)
        expires = client.previous_secret_expires_at
        await record(
            self.repository.session,
            "client.secret_rotated",
            Subject("client", client_id),
            {"previous_valid_until": expires.isoformat() if expires else None},
        )
        self.on_changed(client_id)
        return client, secret

    async def replace_keys(self, client_id: UUID, jwks: ClientJwkSet) -> OAuthClient:
        """The client's public keys are `jwks` from now on (none when it is empty): assertions signed with a key no
        longer in it are refused at once."""
        verification_keys(jwks, prefix="")
        client = await self.update({"jwks": to_stored(jwks)}, item_id=client_id, bind_group=PRIMARY)
        await record(
            self.repository.session, "client.keys_changed", Subject("client", client_id), _keys_described(jwks)
        )
        self.on_changed(client_id)
        return client

    async def delete_client(self, client_id: UUID) -> None:
        """Delete the client: its secrets and every token issued to it stop working at once."""
        await self.delete(client_id, bind_group=PRIMARY)
        await record(self.repository.session, "client.deleted", Subject("client", client_id))
        self.on_changed(client_id)


def _described(client: OAuthClient) -> dict[str, object]:
    """A client's `client.created` data: its name and scopes (never a secret or its hash)."""
    return {"name": client.name, "scopes": list(client.scopes)}


def _keys_described(jwks: ClientJwkSet) -> dict[str, object]:
    """A client's `client.keys_changed` data: its public keys by type and kid (their material is in its read)."""
    return {"keys": [{"kty": key.kty, "kid": key.kid if isinstance(key.kid, str) else None} for key in jwks.keys]}


def to_client_read(client: OAuthClient) -> OAuthClientRead:
    """The wire form of a client row (never a hash)."""
    expires = client.previous_secret_expires_at
    return OAuthClientRead(
        client_id=client.id,
        name=client.name,
        scopes=client.scopes,
        created_by=client.created_by,
        created_at=client.created_at,
        secret_rotated_at=client.secret_rotated_at,
        previous_secret_expires_at=expires if expires is not None and expires > datetime.now(UTC) else None,
        jwks=msgspec.convert(client.jwks, ClientJwkSet) if client.jwks is not None else None,
    )
