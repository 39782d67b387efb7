"""HTTP endpoints for users: `/api/v1/users`, and a user's own `/api/v1/users/me`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.spec import (
    Example,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from accounts.config import Settings
from accounts.core.errors import (
    FieldError,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
    problem_responses,
)
from accounts.core.http.idempotency import IdempotencyMiddleware
from accounts.core.http.media import NegotiatedResponse
from accounts.core.http.openapi import LOCATION_HEADER
from accounts.core.http.preconditions import (
    ETAG_HEADER,
    NOT_MODIFIED,
    IfMatch,
    IfNoneMatch,
    etag,
    if_match_versions,
    tagged,
)
from accounts.core.security import (
    AUTHENTICATED,
    AuthenticatedRequest,
    Principal,
    requires,
    requires_user,
)
from accounts.jobs.schemas import JobRead
from accounts.jobs.services import Jobs
from accounts.users.bulk import BINARY, FORMATS, BadHeader, UploadTooLarge, csv_header, receive, sniff_format
from accounts.users.jobs import EXPORT_JOB, IMPORT_JOB, upload_path
from accounts.users.schemas import (
    BATCH_MAX,
    ONE_LINE,
    ImportFormat,
    OnDuplicate,
    ProfileUpdate,
    UserBatch,
    UserBatchGet,
    UserCreate,
    UserExportQuery,
    UserImportQuery,
    UserListQuery,
    UserPage,
    UserRead,
    UserSort,
    UserUpdate,
)
from accounts.users.services import UserService

# Declared `str` in the path so a malformed id is a 400 naming the parameter, not an unmatched route (404).
UserId = Annotated[UUID, Parameter(description="The user's id (a UUID).")]
ActiveFilter = Annotated[bool | None, Parameter(description="Only active or only inactive users.")]
EmailFilter = Annotated[str | None, Parameter(max_length=254, pattern=ONE_LINE, description="Exact e-mail, any case.")]
PrefixFilter = Annotated[
    str | None,
    Parameter(min_length=1, max_length=200, pattern=ONE_LINE, description="Prefix of e-mail, username or full name."),
]
JOB_LOCATION_HEADER = ResponseHeader(
    name="Location",
    documentation_only=True,
    description="The job's URL: poll it until its status is final.",
    value="/api/v1/jobs/01936f3e-2a4b-7c3d-8e5f-a1b2c3d4e5f6",
)
IMPORT_EXAMPLES: dict[ImportFormat, str] = {
    "ndjson": '{"email": "ada@example.com", "username": "ada.lovelace", "full_name": "Ada Lovelace"}\n'
    '{"email": "charles@example.com", "username": "babbage", "bio": "Engines."}\n',
    "csv": "email,username,full_name,bio\n"
    "ada@example.com,ada.lovelace,Ada Lovelace,\n"
    "charles@example.com,babbage,,Engines.\n",
}


@dataclass
class ImportUsersOperation(Operation):
    """The import's request body is the raw file, which the handler streams to disk, so Litestar has no
    `data` parameter to document it from. It is documented as a binary file, the one raw body every generator
    takes with its defaults; `x-ndjson` and `text/csv`, which name the format, are in the description."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The file: NDJSON (one `UserCreate` object a line) or CSV (a header row naming `UserCreate`"
            f" fields, then a row per user; an empty cell is an absent field). Sent as `{BINARY}` (what generated"
            " clients send), a file starting with `{` is NDJSON and any other CSV; `Content-Type: "
            f"{' or '.join(FORMATS)}` names the format instead.",
            content={
                BINARY: OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY),
                    examples={
                        name: Example(summary=name.upper(), value=example) for name, example in IMPORT_EXAMPLES.items()
                    },
                )
            },
        )


def ensure_may_update(caller: Principal, user_id: UUID, data: UserUpdate) -> None:
    """Admins and `users:write` keys update anyone, users only themselves; nobody changes their own
    flags, and only an admin (not a key) grants or takes admin rights."""
    if not caller.may_access_user(user_id, "users:write"):
        raise Forbidden("You may update only your own account.")
    changes_flags = data.is_active is not msgspec.UNSET or data.is_superuser is not msgspec.UNSET
    if changes_flags and (caller.user_id == user_id or not caller.may("users:write")):
        raise Forbidden("You may not change your own is_active or is_superuser.")
    if data.is_superuser is not msgspec.UNSET and not caller.is_admin:
        raise Forbidden("Only an admin may grant or take admin rights.")


def batch_visibility(caller: Principal) -> UUID | None:
    """The one user a batch read may find for `caller` (None: anyone). Admins and `users:read` callers read
    anyone, a user only themselves; a service without the scope reads no one."""
    if caller.may("users:read"):
        return None
    if caller.user_id is None:
        raise Forbidden("This needs the `users:read` scope, or a user's access token (which reads only its user).")
    return caller.user_id


class UserController(Controller):
    path = "/users"
    tags = ["users"]
    security = AUTHENTICATED

    @post(
        name="createUser",
        middleware=[IdempotencyMiddleware],
        summary="Create a user",
        status_code=201,
        guards=[requires("users:write")],
        response_headers=[LOCATION_HEADER, ETAG_HEADER],
        responses=problem_responses(400, 401, 403, 409, 413, 415),
    )
    async def create_user(
        self,
        users: NamedDependency[UserService],
        db_session: NamedDependency[AsyncSession],
        request: AuthenticatedRequest,
        data: JSONBody[UserCreate],
    ) -> Response[UserRead]:
        user = await users.create(db_session, data)
        headers = {"Location": request.app.route_reverse("getUser", user_id=str(user.id)), "ETag": etag(user.version)}
        return NegotiatedResponse(user, status_code=201, headers=headers)

    @get(
        name="listUsers",
        summary="List users",
        description="Filter by `is_active`, exact `email`, or a prefix `q` of e-mail, username or full name.",
        guards=[requires("users:read")],
        responses=problem_responses(400, 401, 403),
    )
    async def list_users(
        self,
        users: NamedDependency[UserService],
        *,
        limit: Annotated[int, Parameter(ge=1, le=200, description="Page size.")] = 20,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000, description="Rows to skip.")] = 0,
        sort: Annotated[UserSort, Parameter(description="Sort field; a leading `-` sorts descending.")] = "-created_at",
        is_active: ActiveFilter = None,
        email: EmailFilter = None,
        q: PrefixFilter = None,
    ) -> UserPage:
        query = UserListQuery(limit=limit, offset=offset, sort=sort, is_active=is_active, email=email, q=q)
        return await users.page(query)

    @post(
        "/batch-get",
        name="batchGetUsers",
        summary="Get many users at once",
        description=f"Up to {BATCH_MAX} users by `ids` and `emails` (any case) together, in one read. `items` holds"
        " each user found once, in request order (ids first, then e-mails); `missing` lists, once each and in request"
        " order, the ids and the e-mails (lower-cased) that found no one. Admins and `users:read` callers read"
        " anyone; a user reads only themselves, and every other id or e-mail is reported missing, whether or not it"
        " exists. Like `getUser`, it may read from a replica.",
        status_code=200,
        responses=problem_responses(400, 401, 403, 413, 415),
    )
    async def batch_get_users(
        self, users: NamedDependency[UserService], request: AuthenticatedRequest, data: JSONBody[UserBatchGet]
    ) -> UserBatch:
        return await users.get_many(data, only=batch_visibility(request.user))

    @get(
        "/me",
        name="getMe",
        summary="Get my account",
        guards=[requires_user],
        response_headers=[ETAG_HEADER],
        responses={**problem_responses(400, 401, 403), **NOT_MODIFIED},
    )
    async def get_me(
        self, users: NamedDependency[UserService], request: AuthenticatedRequest, if_none_match: IfNoneMatch = None
    ) -> Response[UserRead]:
        user = await users.get(request.user.own_user_id)
        return tagged(user, user.version, if_none_match=if_none_match)

    @patch(
        "/me",
        name="updateMe",
        summary="Update my profile",
        description="Only the fields sent change; `null` clears `full_name` or `bio`.",
        guards=[requires_user],
        response_headers=[ETAG_HEADER],
        responses=problem_responses(400, 401, 403, 409, 412, 413, 415),
    )
    async def update_me(
        self,
        users: NamedDependency[UserService],
        request: AuthenticatedRequest,
        data: JSONBody[ProfileUpdate],
        if_match: IfMatch = None,
    ) -> Response[UserRead]:
        user = await users.update(request.user.own_user_id, data, versions=if_match_versions(if_match))
        return tagged(user, user.version)

    @get(
        "/{user_id:str}",
        name="getUser",
        summary="Get a user",
        description="Admins and `users:read` keys read anyone; a user reads only themselves.",
        response_headers=[ETAG_HEADER],
        responses={**problem_responses(400, 401, 403, 404), **NOT_MODIFIED},
    )
    async def get_user(
        self,
        users: NamedDependency[UserService],
        request: AuthenticatedRequest,
        user_id: UserId,
        if_none_match: IfNoneMatch = None,
    ) -> Response[UserRead]:
        if not request.user.may_access_user(user_id, "users:read"):
            raise Forbidden("You may read only your own account.")
        user = await users.get(user_id)
        return tagged(user, user.version, if_none_match=if_none_match)

    @patch(
        "/{user_id:str}",
        name="updateUser",
        summary="Update a user",
        description="Only the fields sent change; `null` clears `full_name` or `bio`.",
        response_headers=[ETAG_HEADER],
        responses=problem_responses(400, 401, 403, 404, 409, 412, 413, 415),
    )
    async def update_user(
        self,
        users: NamedDependency[UserService],
        request: AuthenticatedRequest,
        user_id: UserId,
        data: JSONBody[UserUpdate],
        if_match: IfMatch = None,
    ) -> Response[UserRead]:
        ensure_may_update(request.user, user_id, data)
        user = await users.update(user_id, data, versions=if_match_versions(if_match))
        return tagged(user, user.version)

    @delete(
        "/{user_id:str}",
        name="deleteUser",
        summary="Delete a user",
        status_code=204,
        guards=[requires("users:write")],
        responses=problem_responses(400, 401, 403, 404, 412),
    )
    async def delete_user(self, users: NamedDependency[UserService], user_id: UserId, if_match: IfMatch = None) -> None:
        await users.delete(user_id, versions=if_match_versions(if_match))

    @post(
        "/imports",
        name="importUsers",
        summary="Import users from an NDJSON or CSV file",
        description="Answers 202 with the job; the job validates every row as `createUser` does, writes the valid"
        " ones in batches, and keeps an error report (NDJSON: `line`, `error`) as its result. Duplicates match by"
        " e-mail (any case); a password in a row is set only when the user is created. Running the same file"
        " again changes nothing more. At most IMPORT_MAX_BYTES (100 MB by default).",
        status_code=202,
        guards=[requires("users:write")],
        request_max_body_size=None,  # streamed to disk; the handler enforces IMPORT_MAX_BYTES
        operation_class=ImportUsersOperation,
        response_headers=[JOB_LOCATION_HEADER],
        responses=problem_responses(400, 401, 403, 413, 415),
    )
    async def import_users(
        self,
        jobs: NamedDependency[Jobs],
        settings: NamedDependency[Settings],
        request: AuthenticatedRequest,
        on_duplicate: Annotated[
            OnDuplicate,
            Parameter(description="A row whose e-mail belongs to a user: `skip` it, or `update` that user's profile."),
        ] = "skip",
    ) -> Response[JobRead]:
        media_type = request.content_type[0]
        file_format = FORMATS.get(media_type)
        if file_format is None and media_type != BINARY:
            sent = media_type or "without a Content-Type"
            raise UnsupportedMediaType(f"Send the file as {', '.join([BINARY, *FORMATS])}, not {sent}.")
        limit = settings.import_max_bytes
        too_large = PayloadTooLarge(f"The file is larger than {limit} bytes.")
        if (request.content_length or 0) > limit:
            raise too_large
        path = upload_path(settings, f"{uuid7()}.{file_format or 'upload'}")
        try:
            await receive(request.stream(), path, limit)
        except UploadTooLarge:
            raise too_large from None
        try:
            query = UserImportQuery(format=file_format or sniff_format(path), on_duplicate=on_duplicate)
            if query.format == "csv":
                csv_header(path)
            job = await jobs.submit(
                "import_users", IMPORT_JOB, request.user.identity, upload=path.name, **msgspec.structs.asdict(query)
            )
        except BadHeader as exc:
            path.unlink(missing_ok=True)
            raise InvalidInput(str(exc), errors=[FieldError(field="body", message=str(exc))]) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return _job_accepted(request, job)

    @post(
        "/exports",
        name="exportUsers",
        summary="Export users to an NDJSON or CSV file",
        description="Answers 202 with the job; once it is complete, `GET /api/v1/jobs/{id}/result` downloads the"
        " users the filters select (as `listUsers` filters), oldest first. The file is an import file: its rows"
        " are `email`, `username`, `full_name` and `bio`.",
        status_code=202,
        guards=[requires("users:read")],
        response_headers=[JOB_LOCATION_HEADER],
        responses=problem_responses(400, 401, 403),
    )
    async def export_users(
        self,
        jobs: NamedDependency[Jobs],
        request: AuthenticatedRequest,
        *,
        format: Annotated[ImportFormat, Parameter(description="The file's format.")] = "ndjson",
        is_active: ActiveFilter = None,
        email: EmailFilter = None,
        q: PrefixFilter = None,
    ) -> Response[JobRead]:
        query = UserExportQuery(format=format, is_active=is_active, email=email, q=q)
        job = await jobs.submit("export_users", EXPORT_JOB, request.user.identity, **msgspec.structs.asdict(query))
        return _job_accepted(request, job)


def _job_accepted(request: AuthenticatedRequest, job: JobRead) -> Response[JobRead]:
    location = request.app.route_reverse("getJob", job_id=str(job.id))
    return NegotiatedResponse(job, status_code=202, headers={"Location": location})
