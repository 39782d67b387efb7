"""Users: the service and its repository, and the rules that apply whoever calls them."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import ModelDictT, SQLAlchemyAsyncRepositoryService
from advanced_alchemy.utils.serialization import schema_dump
from sqlalchemy import ColumnElement, func, or_

from accounts.auth.passwords import hash_password
from accounts.users.models import User
from accounts.users.schemas import UserListQuery, UserPage, UserRead


def _prefix_pattern(text: str) -> str:
    """A LIKE pattern matching strings that start with `text` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


class UserService(SQLAlchemyAsyncRepositoryService[User]):
    """Creates, reads, lists, updates and deletes users."""

    class Repo(SQLAlchemyAsyncRepository[User]):
        model_type = User

    repository_type = Repo
    match_fields = ["email"]
    # Two queries (count, then page) give an exact total even for an offset past the last row.
    count_with_window_function = False

    async def to_model_on_create(self, data: ModelDictT[User]) -> ModelDictT[User]:
        values = _normalise(schema_dump(data))
        if isinstance(values, dict) and (password := values.pop("password", None)) is not None:
            values["hashed_password"] = await hash_password(password)
        return values

    async def to_model_on_update(self, data: ModelDictT[User]) -> ModelDictT[User]:
        return _normalise(schema_dump(data))

    async def list_page(self, query: UserListQuery) -> UserPage:
        """One page of users matching `query`, with the exact number of matches."""
        conditions: list[ColumnElement[bool]] = []
        if query.is_active is not None:
            conditions.append(User.is_active.is_(query.is_active))
        if query.email is not None:
            conditions.append(User.email == query.email.lower())
        if query.q:
            pattern = _prefix_pattern(query.q.lower())
            conditions.append(
                or_(
                    User.email.like(pattern),
                    User.username.like(pattern),
                    func.lower(User.full_name).like(pattern),
                )
            )
        field = query.sort.removeprefix("-")
        order: Literal["asc", "desc"] = "desc" if query.sort.startswith("-") else "asc"
        order_by = [OrderBy(field_name=field, sort_order=order)]
        if field == "created_at":  # ties on the timestamp must not reorder rows between pages
            order_by.append(OrderBy(field_name="id", sort_order=order))
        users, total = await self.get_many_and_count(
            *conditions, *order_by, LimitOffset(limit=query.limit, offset=query.offset)
        )
        return UserPage(items=[to_read(user) for user in users], total=total, limit=query.limit, offset=query.offset)


def _normalise(data: Any) -> Any:
    if isinstance(data, dict) and isinstance(data.get("email"), str):
        data["email"] = data["email"].lower()
    return data


def to_read(user: User) -> UserRead:
    """The wire form of a user row."""
    return msgspec.convert(user, UserRead, from_attributes=True)
