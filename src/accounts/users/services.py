"""Users: the service and its repository, and the rules that apply whoever calls them."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn
from uuid import UUID

import asyncpg
import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import ModelDictT, SQLAlchemyAsyncRepositoryService
from advanced_alchemy.utils.serialization import schema_dump
from asyncpg.pool import PoolConnectionProxy
from uuid_utils.compat import uuid7

from accounts.auth.cache import CredentialCache
from accounts.core.errors import NotFound, PreconditionFailed
from accounts.core.passwords import hash_password
from accounts.users.models import User
from accounts.users.schemas import (
    OnDuplicate,
    ProfileUpdate,
    RowError,
    UserCreate,
    UserExportQuery,
    UserExportRow,
    UserListQuery,
    UserPage,
    UserRead,
)


def _prefix_pattern(text: str) -> str:
    """A LIKE pattern matching strings that start with `text` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


class UserService(SQLAlchemyAsyncRepositoryService[User]):
    """Creates users (reads, updates and deletes are `UserStore`'s)."""

    class Repo(SQLAlchemyAsyncRepository[User]):
        model_type = User

    repository_type = Repo
    match_fields = ["email"]

    async def to_model_on_create(self, data: ModelDictT[User]) -> ModelDictT[User]:
        values = _normalise(schema_dump(data))
        if isinstance(values, dict) and (password := values.pop("password", None)) is not None:
            values["hashed_password"] = await hash_password(password)
        return values


_COLUMNS = ", ".join(UserRead.__struct_fields__)
_BY_ID = f"SELECT {_COLUMNS} FROM users WHERE id = $1"  # noqa: S608 - no value in it
_ORDER = {
    "created_at": "created_at, id",
    "-created_at": "created_at DESC, id DESC",
    "email": "email",
    "-email": "email DESC",
    "username": "username",
    "-username": "username DESC",
}


class UserStore:
    """The hot paths (read a user, a page of users, update a user) straight on asyncpg: one round trip
    each, prepared statements, no ORM objects. `make bench` measured the ORM path at a third of the
    throughput. Deletes are here too, as one conditional statement; creating stays on UserService.

    `get` and `page` read from the replicas in turn, when there are any, so they may lag the primary a
    little; writes, and the reads that decide or answer a write, use the primary `pool`."""

    def __init__(self, pool: asyncpg.Pool, credentials: CredentialCache, replicas: Sequence[asyncpg.Pool] = ()) -> None:
        self.pool = pool
        self.credentials = credentials
        self._read_pools = itertools.cycle(replicas or [pool])

    async def get(self, user_id: UUID, *, primary: bool = False) -> UserRead:
        """The user as a replica has it; `primary` when the answer must include the caller's last write."""
        pool = self.pool if primary else next(self._read_pools)
        record = await pool.fetchrow(_BY_ID, user_id)
        if record is None and pool is not self.pool:  # a user created a moment ago may not have reached the replica
            record = await self.pool.fetchrow(_BY_ID, user_id)
        if record is None:
            raise NotFound(f"No user has the id {user_id}.")
        return UserRead(**record)

    async def update(self, user_id: UUID, data: ProfileUpdate, *, versions: list[int] | None = None) -> UserRead:
        """Change the fields `data` carries, if the user's version is one of `versions` (any, if None);
        an empty update reads the user back."""
        changes = _normalise(schema_dump(data))
        if not changes:
            user = await self.get(user_id, primary=True)
            if versions is not None and user.version not in versions:
                raise PreconditionFailed
            return user
        # Column names come from the Struct's fields, never from the request; values are $n parameters.
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, start=2))
        condition = "" if versions is None else f" AND version = ANY(${len(changes) + 2}::int[])"
        record = await self.pool.fetchrow(
            f"UPDATE users SET {assignments}, updated_at = now() WHERE id = $1{condition} RETURNING {_COLUMNS}",  # noqa: S608
            user_id,
            *changes.values(),
            *([] if versions is None else [versions]),
        )
        if record is None:
            await self._explain_miss(user_id)
        if changes.keys() & {"is_active", "is_superuser"}:
            self.credentials.forget_user(user_id)  # holds in this worker from the next request on
        return UserRead(**record)

    async def delete(self, user_id: UUID, *, versions: list[int] | None = None) -> None:
        """Delete the user if their version is one of `versions` (any, if None); their tokens and keys go too."""
        deleted = await self.pool.fetchval(
            "DELETE FROM users WHERE id = $1 AND ($2::int[] IS NULL OR version = ANY($2)) RETURNING id",
            user_id,
            versions,
        )
        if deleted is None:
            await self._explain_miss(user_id)
        self.credentials.forget_user(user_id)

    async def _explain_miss(self, user_id: UUID) -> NoReturn:
        """A conditional write changed no row: the user is gone (404) or has another version (412)."""
        if await self.pool.fetchval("SELECT 1 FROM users WHERE id = $1", user_id) is None:
            raise NotFound(f"No user has the id {user_id}.")
        raise PreconditionFailed

    async def page(self, query: UserListQuery) -> UserPage:
        """One page and the exact number of matches; without `email` or `q` the number comes from the
        trigger-kept `user_counts`, so it costs the same for a thousand users as for a million."""
        values: list[object] = [query.limit, query.offset]
        conditions = _filters(query, values)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        if query.email is None and not query.q:
            flag = "WHERE is_active = $3" if query.is_active is not None else ""
            total = f"SELECT coalesce(sum(users), 0)::bigint FROM user_counts {flag}"  # noqa: S608 - fixed fragments
        else:
            total = f"SELECT count(*) FROM users {where}"  # noqa: S608 - values go as $n parameters
        # One round trip: the total, joined to the page (a row of NULLs when the page is empty).
        records = await next(self._read_pools).fetch(
            f"SELECT ({total}) AS total, page.* FROM (SELECT 1) AS one LEFT JOIN LATERAL ("  # noqa: S608
            f"SELECT {_COLUMNS} FROM users {where} ORDER BY {_ORDER[query.sort]} LIMIT $1 OFFSET $2"
            ") AS page ON true",
            *values,
        )
        items = [
            UserRead(**{name: record[name] for name in UserRead.__struct_fields__})
            for record in records
            if record["id"] is not None
        ]
        return UserPage(items=items, total=records[0]["total"], limit=query.limit, offset=query.offset)


def _filters(query: UserListQuery | UserExportQuery, values: list[object]) -> list[str]:
    """The SQL conditions of the list filters; their values are appended to `values` as $n parameters."""
    conditions: list[str] = []
    if query.is_active is not None:
        values.append(query.is_active)
        conditions.append(f"is_active = ${len(values)}")
    if query.email is not None:
        values.append(query.email.lower())
        conditions.append(f"email = ${len(values)}")
    if query.q:
        values.append(_prefix_pattern(query.q.lower()))
        n = len(values)
        conditions.append(f"(email LIKE ${n} OR username LIKE ${n} OR lower(full_name) LIKE ${n})")
    return conditions


def _normalise(data: Any) -> Any:
    if isinstance(data, dict) and isinstance(data.get("email"), str):
        data["email"] = data["email"].lower()
    return data


def to_read(user: User) -> UserRead:
    """The wire form of a user row."""
    return msgspec.convert(user, UserRead, from_attributes=True)


_STAGED_COLUMNS = ("line", "id", "email", "username", "full_name", "bio", "hashed_password")
# A staged row whose username belongs to another user (another e-mail) is a row error, not a write.
_TAKEN = (
    "DELETE FROM user_import AS staged USING users WHERE users.username = staged.username"
    " AND users.email <> staged.email{condition} RETURNING staged.line"
)
# skip: a row whose e-mail exists is left alone, so its username cannot clash with anyone.
_TAKEN_BY_OTHERS = _TAKEN.format(
    condition=" AND NOT EXISTS (SELECT 1 FROM users AS same WHERE same.email = staged.email)"
)
# update: a username is free when its holder is renamed by this batch (the renames run first).
_TAKEN_AFTER_RENAMES = _TAKEN.format(
    condition=" AND NOT EXISTS (SELECT 1 FROM user_import AS renamed"
    " WHERE renamed.email = users.email AND renamed.username <> users.username)"
)
_TAKEN_NOW = _TAKEN.format(condition="")
# The profile fields change (never the password); an unchanged user is not written at all, so its
# version and ETag stay and a second run of the same file changes nothing.
_UPDATE = (
    "UPDATE users SET username = staged.username, full_name = staged.full_name, bio = staged.bio,"
    " updated_at = now() FROM user_import AS staged WHERE users.email = staged.email"
    " AND (users.username, users.full_name, users.bio) IS DISTINCT FROM (staged.username, staged.full_name, staged.bio)"
)
_INSERT = (
    "INSERT INTO users (id, email, username, full_name, bio, hashed_password, is_active, is_superuser,"
    " token_version, version, created_at, updated_at)"
    " SELECT id, email, username, full_name, bio, hashed_password, true, false, 0, 1, now(), now()"
    " FROM user_import ORDER BY line ON CONFLICT (email) DO NOTHING"
)
_BATCH_ATTEMPTS = 3


class ImportedBatch(msgspec.Struct, kw_only=True):
    created: int
    updated: int
    errors: list[RowError]


# Made in each batch's transaction: behind PgBouncer the next transaction may run on another server connection.
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS user_import (line int NOT NULL, id uuid NOT NULL, email text NOT NULL,"
    " username text NOT NULL, full_name text, bio text, hashed_password text) ON COMMIT DELETE ROWS"
)


class UserImportBatches:
    """Writes an import's valid rows, a batch at a time, on one connection: each batch is COPYed into a
    temporary table and inserted (or merged) by one statement, in one transaction, so a batch is written
    whole or not at all. Duplicates are matched by e-mail (stored lower-cased)."""

    def __init__(self, connection: asyncpg.Connection | PoolConnectionProxy, on_duplicate: OnDuplicate) -> None:
        self.connection = connection
        self.updates = on_duplicate == "update"

    async def existing_emails(self, emails: list[str]) -> set[str]:
        """Which of these (lower-cased) e-mails belong to users already."""
        records = await self.connection.fetch("SELECT email FROM users WHERE email = ANY($1::text[])", emails)
        return {record["email"] for record in records}

    async def write(self, rows: list[tuple[int, UserCreate, str | None]]) -> ImportedBatch:
        """Write (line, user, password hash) rows. Should a username still clash (a chain of renames, or a
        concurrent write), the batch is rolled back and run again; the last time, every username held
        by another user before the batch counts as taken."""
        records = [
            (line, uuid7(), user.email, user.username, user.full_name, user.bio, hashed) for line, user, hashed in rows
        ]
        for attempt in range(1, _BATCH_ATTEMPTS + 1):
            last = attempt == _BATCH_ATTEMPTS
            taken_check = (_TAKEN_NOW if last else _TAKEN_AFTER_RENAMES) if self.updates else _TAKEN_BY_OTHERS
            try:
                async with self.connection.transaction():
                    await self.connection.execute(_STAGING)
                    await self.connection.copy_records_to_table("user_import", records=records, columns=_STAGED_COLUMNS)
                    taken = await self.connection.fetch(taken_check)
                    updated = _row_count(await self.connection.execute(_UPDATE)) if self.updates else 0
                    created = _row_count(await self.connection.execute(_INSERT))
            except asyncpg.UniqueViolationError:
                if last:
                    raise
                continue
            errors = [RowError(line=record["line"], error="the username is already taken") for record in taken]
            return ImportedBatch(created=created, updated=updated, errors=errors)
        raise AssertionError("unreachable")  # pragma: no cover


def _row_count(status: str) -> int:
    """The row count of a command status (`INSERT 0 12`, `UPDATE 3`)."""
    return int(status.rsplit(" ", 1)[-1])


class UserExports:
    """The users an export selects, in keyset order (created_at, id): a page per query, so memory stays
    flat with table size. Rows that change while an export runs may appear in either state."""

    def __init__(self, connection: asyncpg.Connection | PoolConnectionProxy) -> None:
        self.connection = connection

    async def count(self, query: UserExportQuery) -> int:
        values: list[object] = []
        conditions = _filters(query, values)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        total: int = await self.connection.fetchval(f"SELECT count(*) FROM users {where}", *values)  # noqa: S608
        return total

    async def pages(self, query: UserExportQuery, size: int) -> AsyncIterator[list[UserExportRow]]:
        after: tuple[object, object] | None = None
        while True:
            values: list[object] = [size]
            conditions = _filters(query, values)
            if after is not None:
                values.extend(after)
                conditions.append(f"(created_at, id) > (${len(values) - 1}, ${len(values)})")
            where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
            records = await self.connection.fetch(
                f"SELECT email, username, full_name, bio, created_at, id FROM users {where}"  # noqa: S608
                " ORDER BY created_at, id LIMIT $1",
                *values,
            )
            if records:
                yield [UserExportRow(email=r[0], username=r[1], full_name=r[2], bio=r[3]) for r in records]
            if len(records) < size:
                return
            after = (records[-1]["created_at"], records[-1]["id"])
