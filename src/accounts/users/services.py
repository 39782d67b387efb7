"""Users: the one service that writes `users`, with the rules that hold whoever calls it.

Controllers, sign-in (accounts.auth) and the CLI all go through `UserService`; its statements are in
accounts.users.repository. E-mail addresses are stored lower-cased (`normalise_email`), so they are unique
regardless of case; passwords are stored as argon2id hashes only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import asyncpg
import msgspec
from advanced_alchemy.utils.serialization import schema_dump
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from accounts.core.errors import FieldError, InvalidInput, NotFound, PreconditionFailed
from accounts.core.passwords import hash_password, refuse_weak_password
from accounts.events.services import NOTIFY, Subject, actor_values, record, recording
from accounts.users.models import User
from accounts.users.repository import CREATED_DATA, LoginCandidate, UserRepository, filters
from accounts.users.schemas import (
    BATCH_MAX,
    OnDuplicate,
    ProfileUpdate,
    RowError,
    UserBatch,
    UserBatchGet,
    UserBatchMissing,
    UserCreate,
    UserExportQuery,
    UserExportRow,
    UserListQuery,
    UserPage,
    UserRead,
)


def normalise_email(email: str) -> str:
    """An address as it is stored and looked up: lower-cased, so `Ada@Example.com` and `ada@example.com` are one."""
    return email.lower()


def _no_one(_: UUID) -> None:
    pass


class UserService:
    """Creating, reading, changing and deleting users; their passwords, token versions and verified addresses.

    `on_credentials_changed(user_id)` is called when a change decides whether the user's tokens still work (a
    deactivation, admin rights, a deletion), so this worker's credential cache forgets the user at once; the
    other workers hear it from the database."""

    def __init__(self, repository: UserRepository, on_credentials_changed: Callable[[UUID], None] = _no_one) -> None:
        self.repository = repository
        self.on_credentials_changed = on_credentials_changed

    async def create(self, session: AsyncSession, data: UserCreate, *, admin: bool = False) -> UserRead:
        """A new user, in the session's transaction (committed with the rest of the request); a password that is
        easy to guess (`refuse_weak_password`) is refused before anything is hashed or written."""
        values = schema_dump(data)
        values["email"] = normalise_email(values["email"])
        if (password := values.pop("password", None)) is not None:
            await refuse_weak_password(
                "password", password, email=values["email"], username=data.username, full_name=data.full_name
            )
            values["hashed_password"] = await hash_password(password)
        values["is_superuser"] = admin
        return await self.repository.insert(session, values, actor_values() if recording() else None)

    async def get(self, user_id: UUID, *, primary: bool = False) -> UserRead:
        user = await self.repository.get(user_id, primary=primary)
        if user is None:
            raise NotFound(f"No user has the id {user_id}.")
        return user

    async def page(self, query: UserListQuery) -> UserPage:
        return await self.repository.page(_normalised_filters(query))

    async def get_many(self, batch: UserBatchGet, *, only: UUID | None = None) -> UserBatch:
        """The users `batch` names, each once, in request order (ids first, then e-mails), and the ids and e-mails
        (lower-cased) that named none; with `only`, every other user counts as missing, whether or not it exists."""
        if not batch.ids and not batch.emails:
            raise _batch_error("Name at least one user, in `ids` or `emails`.")
        if len(batch.ids) + len(batch.emails) > BATCH_MAX:
            sent = f"{len(batch.ids)} ids and {len(batch.emails)} e-mails"
            raise _batch_error(f"Name at most {BATCH_MAX} users at a time, in `ids` and `emails` together, not {sent}.")
        ids = list(dict.fromkeys(batch.ids))
        emails = list(dict.fromkeys(normalise_email(email) for email in batch.emails))
        found = await self.repository.get_many(ids, emails, only=only)
        by_id = {user.id: user for user in found}
        by_email = {user.email: user for user in found}
        named = [by_id[user_id] for user_id in ids if user_id in by_id]
        named += [by_email[email] for email in emails if email in by_email]
        return UserBatch(
            items=list({user.id: user for user in named}.values()),
            missing=UserBatchMissing(
                ids=[user_id for user_id in ids if user_id not in by_id],
                emails=[email for email in emails if email not in by_email],
            ),
        )

    async def update(self, user_id: UUID, data: ProfileUpdate, *, versions: list[int] | None = None) -> UserRead:
        """Change the fields `data` carries, if the user's version is one of `versions` (any, if None); an empty
        update reads the user back (from the primary: it answers a write)."""
        changes = schema_dump(data)
        if isinstance(changes.get("email"), str):
            changes["email"] = normalise_email(changes["email"])
        if not changes:
            user = await self.get(user_id, primary=True)
            if versions is not None and user.version not in versions:
                raise PreconditionFailed
            return user
        updated = await self.repository.update(user_id, changes, versions, actor_values() if recording() else None)
        if updated is None:
            await self._explain_miss(user_id)
        if changes.keys() & {"is_active", "is_superuser"}:
            self.on_credentials_changed(user_id)
        return updated

    async def delete(self, user_id: UUID, *, versions: list[int] | None = None) -> None:
        """Delete the user if their version is one of `versions` (any, if None); their tokens and keys go too."""
        if not await self.repository.delete(user_id, versions, actor_values() if recording() else None):
            await self._explain_miss(user_id)
        self.on_credentials_changed(user_id)

    async def _explain_miss(self, user_id: UUID) -> NoReturn:
        """A conditional write changed no row: the user is gone (404) or has another version (412)."""
        if not await self.repository.exists(user_id):
            raise NotFound(f"No user has the id {user_id}.")
        raise PreconditionFailed

    async def credentials(self, user_id: UUID) -> tuple[bool, bool, int] | None:
        """(is_active, is_superuser, token_version) of the user, for checking their tokens; None if none."""
        return await self.repository.credentials(user_id)

    # --- what sign-in and e-mail change, in the caller's transaction ---------------------------

    async def for_login(self, identifier: str) -> LoginCandidate | None:
        """What a login needs of the user an e-mail address (any case) or a username names."""
        return await self.repository.for_login(normalise_email(identifier), identifier)

    async def row(self, session: AsyncSession, user_id: UUID) -> User:
        """The user's row as the primary has it (to check the password it holds, say)."""
        user = await self.repository.row(session, user_id)
        if user is None:
            raise NotFound(f"No user has the id {user_id}.")
        return user

    async def lock(self, session: AsyncSession, user_id: UUID) -> User:
        """The user, whose row stays locked until the session's transaction ends (one change at a time)."""
        user = await self.repository.lock(session, user_id)
        if user is None:
            raise NotFound(f"No user has the id {user_id}.")
        return user

    async def set_password(
        self, session: AsyncSession, user_id: UUID, hashed_password: str, *, verified_email: bool = False
    ) -> None:
        """Store a new password hash; every token issued before stops working (the token version moves on).
        `verified_email`: the change was proved through the address (a reset link), so it counts as verified."""
        values: dict[str, Any] = {"hashed_password": hashed_password, "token_version": User.token_version + 1}
        if verified_email:
            values["email_verified_at"] = _coalesce_now(User.email_verified_at)
        if await self.repository.set(session, user_id, **values):
            how = "reset" if verified_email else "change"
            await record(session, "user.password_changed", Subject("user", user_id), {"how": how})

    async def rehash_password(self, session: AsyncSession, user_id: UUID, hashed_password: str) -> None:
        """The same password, hashed with the current parameters: its tokens keep working."""
        await self.repository.set(session, user_id, hashed_password=hashed_password)

    async def revoke_tokens(self, session: AsyncSession, user_id: UUID) -> None:
        """Every access token issued to the user before now stops working (logging out everywhere)."""
        if await self.repository.set(session, user_id, token_version=User.token_version + 1):
            await record(session, "user.logged_out_everywhere", Subject("user", user_id))

    async def mark_email_verified(self, session: AsyncSession, user_id: UUID, email: str | None = None) -> None:
        """Mark the user's address verified (`email`: the address the link was sent to, for the event)."""
        if await self.repository.set(session, user_id, User.email_verified_at.is_(None), email_verified_at=func.now()):
            await record(session, "user.email_verified", Subject("user", user_id), {"email": email} if email else {})


def _batch_error(detail: str) -> InvalidInput:
    return InvalidInput(detail, errors=[FieldError(field=field, message=detail) for field in ("ids", "emails")])


def _coalesce_now(column: Any) -> Any:
    return func.coalesce(column, func.now())


FilteredQuery = TypeVar("FilteredQuery", UserListQuery, UserExportQuery)


def _normalised_filters(query: FilteredQuery) -> FilteredQuery:
    """The filters as stored values compare: the e-mail and the prefix lower-cased."""
    return msgspec.structs.replace(
        query,
        email=normalise_email(query.email) if query.email is not None else None,
        q=query.q.lower() if query.q else query.q,
    )


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
# With events: each created and each changed user's event in the same statement ($1: the job id). An import's
# actor is the system; `before` is the row as the statement found it, for the fields that changed.
_IMPORT_FIELDS = ("username", "full_name", "bio")
_UPDATE_WITH_EVENTS = (
    "WITH updated AS ("  # noqa: S608 - fixed fragments
    + _UPDATE.replace(
        "FROM user_import AS staged WHERE", "FROM user_import AS staged, users AS before WHERE before.id = users.id AND"
    )
    + " RETURNING users.id, "
    + ", ".join(f"users.{name}, before.{name} AS old_{name}" for name in _IMPORT_FIELDS)
    + "), recorded AS (INSERT INTO events (type, subject_type, subject_id, actor_type, data)"
    " SELECT 'user.updated', 'user', id::text, 'system', jsonb_build_object('changes', "
    + " || ".join(
        f"CASE WHEN {name} IS DISTINCT FROM old_{name} THEN jsonb_build_object('{name}', {name}) ELSE '{{}}' END"
        for name in _IMPORT_FIELDS
    )
    + ", 'source', 'import', 'job_id', $1::text) FROM updated) SELECT count(*) FROM updated"
)
_INSERT_WITH_EVENTS = (
    f"WITH inserted AS ({_INSERT} RETURNING id, email, username, full_name, is_active, is_superuser),"  # noqa: S608 - fixed fragments
    " recorded AS (INSERT INTO events (type, subject_type, subject_id, actor_type, data)"
    f" SELECT 'user.created', 'user', id::text, 'system', {CREATED_DATA}"
    " || jsonb_build_object('source', 'import', 'job_id', $1::text) FROM inserted) SELECT count(*) FROM inserted"
)


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

    def __init__(
        self, connection: asyncpg.Connection | PoolConnectionProxy, on_duplicate: OnDuplicate, job_id: str = ""
    ) -> None:
        self.connection = connection
        self.updates = on_duplicate == "update"
        self.job_id = job_id
        """Named in the events of the users it creates and changes."""

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
                    updated = await self._run(_UPDATE, _UPDATE_WITH_EVENTS) if self.updates else 0
                    created = await self._run(_INSERT, _INSERT_WITH_EVENTS)
                    if recording() and (created or updated):
                        await self.connection.execute(NOTIFY)  # sent on commit: a batch's events are announced
            except asyncpg.UniqueViolationError:
                if last:
                    raise
                continue
            errors = [RowError(line=record["line"], error="the username is already taken") for record in taken]
            return ImportedBatch(created=created, updated=updated, errors=errors)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, statement: str, with_events: str) -> int:
        """Run a write of the batch, recording its events when events are on; how many users it wrote."""
        if not recording():
            return _row_count(await self.connection.execute(statement))
        written: int = await self.connection.fetchval(with_events, self.job_id)
        return written


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
        conditions = filters(_normalised_filters(query), values)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        total: int = await self.connection.fetchval(f"SELECT count(*) FROM users {where}", *values)  # noqa: S608
        return total

    async def pages(self, query: UserExportQuery, size: int) -> AsyncIterator[list[UserExportRow]]:
        after: tuple[object, object] | None = None
        while True:
            values: list[object] = [size]
            conditions = filters(_normalised_filters(query), values)
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
