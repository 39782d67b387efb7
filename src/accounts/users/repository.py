"""Every statement on `users`, whichever driver runs it: the hot reads and updates straight on asyncpg (one round
trip each, prepared, no ORM objects: `make bench` measured the ORM path at a third of their throughput), and the
rest on the caller's session, in its transaction (sign-up writes the user and its e-mail together).

Values arrive normalised (accounts.users.services): this module only runs statements.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple, cast
from uuid import UUID

import asyncpg
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from accounts.core.db import PRIMARY, driver_connection
from accounts.events.services import CHANNEL, announce_on_commit, announcer
from accounts.users.models import User
from accounts.users.schemas import UserExportQuery, UserListQuery, UserPage, UserRead

_COLUMNS = ", ".join(UserRead.__struct_fields__)
_USERS_COLUMNS = ", ".join(f"users.{name}" for name in UserRead.__struct_fields__)
_EVENT = "INSERT INTO events (type, subject_type, subject_id, actor_type, actor_id, request_id, data)"
EventActor = tuple[str, str | None, str | None]
"""(actor_type, actor_id, request_id) of the events a statement writes (accounts.events.services.actor_values)."""
CREATED_DATA = (
    "jsonb_build_object("
    + ", ".join(f"'{name}', {name}" for name in ("email", "username", "full_name", "is_active", "is_superuser"))
    + ")"
)
"""The `data` of `user.created`, built in SQL from the inserted row: what identifies and describes the user, never
the password hash (an import adds its `source` and `job_id`)."""
# What a statement writing events ends with: its xid, which the worker announces after the commit, or (in a
# process without an announcer) the notification itself, sent on commit.
_XID = "pg_current_xact_id()::text::bigint AS event_xid"
_NOTIFYING = f"pg_notify('{CHANNEL}', pg_current_xact_id()::text) AS event_xid"
_BY_ID = f"SELECT {_COLUMNS} FROM users WHERE id = $1"  # noqa: S608 - no value in it
# $3 (when not NULL) is the one user the caller may see: the others are never read, so nothing tells they exist.
_BY_IDS_OR_EMAILS = (
    f"SELECT {_COLUMNS} FROM users WHERE (id = ANY($1::uuid[]) OR email = ANY($2::text[]))"  # noqa: S608
    " AND ($3::uuid IS NULL OR id = $3)"
)
_FOR_LOGIN = (
    "SELECT id, email, hashed_password, is_active, is_superuser, token_version FROM users"
    " WHERE email = $1 OR username = $2"
)


class LoginCandidate(NamedTuple):
    """What a login needs of the user it names (read in one round trip, outside any transaction)."""

    id: UUID
    email: str
    hashed_password: str | None
    is_active: bool
    is_superuser: bool
    token_version: int


_ORDER = {
    "created_at": "created_at, id",
    "-created_at": "created_at DESC, id DESC",
    "email": "email",
    "-email": "email DESC",
    "username": "username",
    "-username": "username DESC",
}


class UserRepository:
    """`get` and `page` read from the replicas in turn, when there are any, so they may lag the primary a little;
    writes, and the reads that decide or answer a write, use the primary `pool`."""

    def __init__(self, pool: asyncpg.Pool, replicas: Sequence[asyncpg.Pool] = ()) -> None:
        self.pool = pool
        self._read_pools = itertools.cycle(replicas or [pool])

    # --- on asyncpg -----------------------------------------------------------------------------

    async def get(self, user_id: UUID, *, primary: bool = False) -> UserRead | None:
        """The user as a replica has it; `primary` when the answer must include the caller's last write."""
        pool = self.pool if primary else next(self._read_pools)
        record = await pool.fetchrow(_BY_ID, user_id)
        if record is None and pool is not self.pool:  # a user created a moment ago may not have reached the replica
            record = await self.pool.fetchrow(_BY_ID, user_id)
        return None if record is None else UserRead(**record)

    async def get_many(self, ids: list[UUID], emails: list[str], *, only: UUID | None = None) -> list[UserRead]:
        """The users with these ids or (lower-cased) e-mails, in no order, as a replica has them; with `only`, at
        most that user. In one round trip; a second, to the primary, only for what a replica did not have."""
        pool = next(self._read_pools)
        records = await pool.fetch(_BY_IDS_OR_EMAILS, ids, emails, only)
        if pool is not self.pool:  # users created a moment ago may not have reached the replica
            found_ids = {record["id"] for record in records}
            found_emails = {record["email"] for record in records}
            missing_ids = [user_id for user_id in ids if user_id not in found_ids]
            missing_emails = [email for email in emails if email not in found_emails]
            if missing_ids or missing_emails:
                records += await self.pool.fetch(_BY_IDS_OR_EMAILS, missing_ids, missing_emails, only)
        return [UserRead(**record) for record in records]

    async def exists(self, user_id: UUID) -> bool:
        return await self.pool.fetchval("SELECT 1 FROM users WHERE id = $1", user_id) is not None

    async def update(
        self, user_id: UUID, changes: dict[str, Any], versions: list[int] | None, events: EventActor | None = None
    ) -> UserRead | None:
        """Set `changes` if the user's version is one of `versions` (any, if None); None when no row changed.

        With `events`, the same statement records `user.updated` with the fields whose value changed (none: no
        event), and `user.deactivated` or `user.reactivated` when is_active changed: one round trip, one commit
        (two, each its own, when another write came in between, or nothing is updated: `_update_with_events`)."""
        values = [user_id, *changes.values(), *([] if versions is None else [versions])]
        if events is None:
            record = await self.pool.fetchrow(_update(tuple(changes), versioned=versions is not None), *values)
            return None if record is None else UserRead(**record)
        announce = announcer()
        shape = {"names": tuple(changes), "versioned": versions is not None, "announced": announce is not None}
        record = await self.pool.fetchrow(_update_with_events(**shape, locked=False), *values, *events)
        if record is None:  # no such user, another version, or a write in between: decided again under the lock
            record = await self.pool.fetchrow(_update_with_events(**shape, locked=True), *values, *events)
        if record is None:
            return None
        if announce is not None:
            announce(record["event_xid"])
        return UserRead(**{name: record[name] for name in UserRead.__struct_fields__})

    async def delete(self, user_id: UUID, versions: list[int] | None, events: EventActor | None = None) -> bool:
        """Delete the user if their version is one of `versions` (any, if None); their tokens and keys go too.
        With `events`, the same statement records `user.deleted`."""
        statement = "DELETE FROM users WHERE id = $1 AND ($2::int[] IS NULL OR version = ANY($2)) RETURNING id"
        if events is None:
            return await self.pool.fetchval(statement, user_id, versions) is not None
        announce = announcer()
        statement = (
            f"WITH deleted AS ({statement}), recorded AS ({_EVENT}"  # noqa: S608 - fixed fragments
            " SELECT 'user.deleted', 'user', id::text, $3, $4, $5, '{}' FROM deleted)"
            f" SELECT id, {_XID if announce else _NOTIFYING} FROM deleted"
        )
        record = await self.pool.fetchrow(statement, user_id, versions, *events)
        if record is not None and announce is not None:
            announce(record["event_xid"])
        return record is not None

    async def page(self, query: UserListQuery) -> UserPage:
        """One page and the exact number of matches; without `email` or `q` the number comes from the
        trigger-kept `user_counts`, so it costs the same for a thousand users as for a million."""
        values: list[object] = [query.limit, query.offset]
        conditions = filters(query, values)
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

    async def for_login(self, email: str, username: str) -> LoginCandidate | None:
        # On the primary: a user who has just signed up (or changed password) logs in at once.
        record = await self.pool.fetchrow(_FOR_LOGIN, email, username)
        return None if record is None else LoginCandidate(*record)

    async def credentials(self, user_id: UUID) -> tuple[bool, bool, int] | None:
        """(is_active, is_superuser, token_version): what decides whether the user's tokens still work."""
        record = await self.pool.fetchrow(
            "SELECT is_active, is_superuser, token_version FROM users WHERE id = $1", user_id
        )
        return None if record is None else (record[0], record[1], record[2])

    # --- on the caller's session, in its transaction ---------------------------------------------

    @staticmethod
    async def insert(session: AsyncSession, values: dict[str, Any], events: EventActor | None = None) -> UserRead:
        """A new user, in the session's transaction, in one statement on its connection; with `events`, the same
        statement records `user.created` (announced when the session commits)."""
        columns = ["id", *values]  # names from UserCreate's fields and the service, never from the request
        placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        statement = (
            f"INSERT INTO users ({', '.join(columns)}, created_at, updated_at)"  # noqa: S608 - values as $n
            f" VALUES ({placeholders}, now(), now()) RETURNING {_COLUMNS}"
        )
        announce = announcer()
        if events is not None:
            actor = f"${len(columns) + 1}, ${len(columns) + 2}, ${len(columns) + 3}"
            statement = (
                f"WITH inserted AS ({statement}), recorded AS ({_EVENT}"  # noqa: S608 - fixed fragments
                f" SELECT 'user.created', 'user', id::text, {actor}, {CREATED_DATA} FROM inserted)"
                f" SELECT {_COLUMNS}, {_XID if announce else _NOTIFYING} FROM inserted"
            )
        async with driver_connection(session) as connection:
            record = await connection.fetchrow(statement, uuid7(), *values.values(), *(events or ()))
        record = cast("asyncpg.Record", record)  # an INSERT ... RETURNING with no conflict clause returns its row
        if events is not None and announce is not None:
            announce_on_commit(session, record["event_xid"])
        return UserRead(**{name: record[name] for name in UserRead.__struct_fields__})

    @staticmethod
    async def lock(session: AsyncSession, user_id: UUID) -> User | None:
        """The user's row, locked until the session's transaction ends."""
        return (
            await session.execute(
                select(User).where(User.id == user_id).with_for_update().execution_options(bind_group=PRIMARY)
            )
        ).scalar_one_or_none()

    @staticmethod
    async def set(session: AsyncSession, user_id: UUID, *conditions: ColumnElement[bool], **values: Any) -> bool:
        """Set columns of one user, if `conditions` hold (`token_version=User.token_version + 1` works too);
        whether a row changed."""
        result = await session.execute(
            update(User).where(User.id == user_id, *conditions).values(**values, updated_at=func.now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    async def row(session: AsyncSession, user_id: UUID) -> User | None:
        """The user's row, from the primary (it decides a write)."""
        return (
            await session.execute(select(User).where(User.id == user_id).execution_options(bind_group=PRIMARY))
        ).scalar_one_or_none()


def _assignments(names: tuple[str, ...], *, versioned: bool) -> tuple[str, str]:
    """The SET list of an update of `names` ($2 on; $1 is the id) and its version condition (the $n after them)."""
    # Column names come from the Struct's fields, never from the request; values are $n parameters.
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=2))
    return assignments, f" AND users.version = ANY(${len(names) + 2}::int[])" if versioned else ""


@functools.lru_cache(maxsize=256)  # one per set of fields a PATCH sends: few, and made once each
def _update(names: tuple[str, ...], *, versioned: bool) -> str:
    """The update of `update` without events."""
    assignments, condition = _assignments(names, versioned=versioned)
    return f"UPDATE users SET {assignments}, updated_at = now() WHERE id = $1{condition} RETURNING {_COLUMNS}"  # noqa: S608


@functools.lru_cache(maxsize=256)
def _update_with_events(names: tuple[str, ...], *, versioned: bool, announced: bool, locked: bool) -> str:
    """The update of `update`, reading the values it replaces to record its events with what changed; the actor's
    three values are the parameters after the update's own. It ends by returning the transaction's xid for the
    caller to announce (`announced`), else by notifying the feed's listeners itself.

    Unless `locked`, the values are read from the statement's snapshot and the row is updated only if its version
    is still the one read (the version trigger bumps it on every update): a write committed in between makes it
    update nothing, and the caller runs it `locked`, reading the row under its lock (`make bench` scenario 11:
    `pgbench` on the statement, 5% more of them a second without the lock)."""
    assignments, condition = _assignments(names, versioned=versioned)
    lock = " FOR UPDATE" if locked else ""
    if not locked:
        condition = f" AND users.version = old.version{condition}"
    count = len(names) + 1 + versioned
    actor = f"${count + 1}, ${count + 2}, ${count + 3}"
    old = ", ".join(f"old.{name} AS old_{name}" for name in names)
    diff = " || ".join(
        f"CASE WHEN {name} IS DISTINCT FROM old_{name} THEN jsonb_build_object('{name}', {name}) ELSE '{{}}' END"
        for name in names
    )
    statement = (
        f"WITH old AS (SELECT id, version, {', '.join(names)} FROM users WHERE id = $1{lock}),"  # noqa: S608
        f" updated AS (UPDATE users SET {assignments}, updated_at = now() FROM old WHERE users.id = old.id{condition}"
        f" RETURNING {_USERS_COLUMNS}, {old}),"
        f" changed AS (SELECT id, {diff} AS changes{', is_active, old_is_active' if 'is_active' in names else ''}"
        " FROM updated),"
        f" recorded AS ({_EVENT} SELECT 'user.updated', 'user', id::text, {actor},"
        " jsonb_build_object('changes', changes) FROM changed WHERE changes <> '{}'"
    )
    if "is_active" in names:
        statement += (
            " UNION ALL SELECT CASE WHEN is_active THEN 'user.reactivated' ELSE 'user.deactivated' END, 'user',"  # noqa: S608
            f" id::text, {actor}, '{{}}' FROM changed WHERE is_active IS DISTINCT FROM old_is_active"
        )
    ending = _XID if announced else _NOTIFYING
    return f"{statement}) SELECT {_COLUMNS}, {ending} FROM updated"  # noqa: S608 - names from UserRead, values as $n


def _prefix_pattern(text: str) -> str:
    """A LIKE pattern matching strings that start with `text` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def filters(query: UserListQuery | UserExportQuery, values: list[object]) -> list[str]:
    """The SQL conditions of the list filters (their e-mail and prefix normalised already); their values are
    appended to `values` as $n parameters."""
    conditions: list[str] = []
    if query.is_active is not None:
        values.append(query.is_active)
        conditions.append(f"is_active = ${len(values)}")
    if query.email is not None:
        values.append(query.email)
        conditions.append(f"email = ${len(values)}")
    if query.q:
        values.append(_prefix_pattern(query.q))
        n = len(values)
        conditions.append(f"(email LIKE ${n} OR username LIKE ${n} OR lower(full_name) LIKE ${n})")
    return conditions
