"""HTTP endpoints for users: `/api/v1/users`."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter

from accounts.errors import problem_responses
from accounts.users.schemas import UserCreate, UserListQuery, UserPage, UserRead, UserSort, UserUpdate
from accounts.users.services import UserService, to_read

# Declared `str` in the path so a malformed id is a 400 naming the parameter, not an unmatched route (404).
UserId = Annotated[UUID, Parameter(description="The user's id (a UUID).")]


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]
    dependencies = {"users": Provide(create_service_provider(UserService))}

    @post(
        operation_id="createUser",
        summary="Create a user",
        status_code=201,
        responses=problem_responses(400, 409, 413, 415),
    )
    async def create_user(self, users: NamedDependency[UserService], data: JSONBody[UserCreate]) -> Response[UserRead]:
        user = to_read(await users.create(data))
        return Response(user, status_code=201, headers={"Location": f"{self.path}/{user.id}"})

    @get(
        operation_id="listUsers",
        summary="List users",
        description="Filter by `is_active`, exact `email`, or a prefix `q` of e-mail, username or full name.",
        responses=problem_responses(400),
    )
    async def list_users(
        self,
        users: NamedDependency[UserService],
        *,
        limit: Annotated[int, Parameter(ge=1, le=200, description="Page size.")] = 20,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000, description="Rows to skip.")] = 0,
        sort: Annotated[UserSort, Parameter(description="Sort field; a leading `-` sorts descending.")] = "-created_at",
        is_active: Annotated[bool | None, Parameter(description="Only active or only inactive users.")] = None,
        email: Annotated[str | None, Parameter(max_length=254, description="Exact e-mail, any case.")] = None,
        q: Annotated[
            str | None, Parameter(min_length=1, max_length=200, description="Prefix of e-mail, username or full name.")
        ] = None,
    ) -> UserPage:
        query = UserListQuery(limit=limit, offset=offset, sort=sort, is_active=is_active, email=email, q=q)
        return await users.list_page(query)

    @get("/{user_id:str}", operation_id="getUser", summary="Get a user", responses=problem_responses(400, 404))
    async def get_user(self, users: NamedDependency[UserService], user_id: UserId) -> UserRead:
        return to_read(await users.get(user_id))

    @patch(
        "/{user_id:str}",
        operation_id="updateUser",
        summary="Update a user",
        description="Only the fields sent change; `null` clears `full_name` or `bio`.",
        responses=problem_responses(400, 404, 409, 413, 415),
    )
    async def update_user(
        self, users: NamedDependency[UserService], user_id: UserId, data: JSONBody[UserUpdate]
    ) -> UserRead:
        return to_read(await users.update(data, item_id=user_id))

    @delete(
        "/{user_id:str}",
        operation_id="deleteUser",
        summary="Delete a user",
        status_code=204,
        responses=problem_responses(400, 404),
    )
    async def delete_user(self, users: NamedDependency[UserService], user_id: UserId) -> None:
        await users.delete(user_id)
