"""The peer: the same endpoints written the way most teams would, with FastAPI + Pydantic v2 +
SQLAlchemy 2 async ORM, served by uvicorn (uvloop, httptools). Same database, JWT check and hash parameters.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import jwt
from argon2 import PasswordHasher, Type
from fastapi import Depends, FastAPI, Form, HTTPException, Query
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Boolean, DateTime, Integer, String, Text, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

engine = create_async_engine(os.environ["BENCH_SQLALCHEMY_URL"], pool_size=10, max_overflow=5)
sessions = async_sessionmaker(engine, expire_on_commit=False)
hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)
PUBLIC_KEY = open(os.environ["BENCH_PUBLIC_KEY_FILE"], "rb").read()  # noqa: SIM115
PRIVATE_KEY = open(os.environ["BENCH_PRIVATE_KEY_FILE"], "rb").read()  # noqa: SIM115
oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")
app = FastAPI()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    username: Mapped[str] = mapped_column(String(32))
    full_name: Mapped[str | None] = mapped_column(String(200))
    bio: Mapped[str | None] = mapped_column(Text)
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean)
    is_superuser: Mapped[bool] = mapped_column(Boolean)
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    token_version: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    email: str
    username: str
    full_name: str | None
    bio: str | None
    is_active: bool
    is_superuser: bool
    email_verified_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int


class UserPage(BaseModel):
    items: list[UserRead]
    total: int
    limit: int
    offset: int


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full_name: str | None = Field(default=None, max_length=200)
    bio: str | None = Field(default=None, max_length=2000)


async def get_db() -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


async def current_user(token: Annotated[str, Depends(oauth2)], db: Annotated[AsyncSession, Depends(get_db)]) -> User:
    try:
        claims = jwt.decode(token, PUBLIC_KEY, algorithms=["EdDSA"], audience="accounts", issuer="accounts")
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, "invalid token") from exc
    user = await db.get(User, uuid.UUID(claims["sub"]))
    if user is None or not user.is_active:
        raise HTTPException(401, "invalid token")
    return user


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/users/{user_id}", response_model=UserRead)
async def get_user(
    user_id: uuid.UUID, caller: Annotated[User, Depends(current_user)], db: Annotated[AsyncSession, Depends(get_db)]
) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise HTTPException(404)
    return user


@app.get("/api/v1/users", response_model=UserPage)
async def list_users(
    caller: Annotated[User, Depends(current_user)],
    db: Annotated[AsyncSession, Depends(get_db)],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    sort: Literal["created_at", "-created_at"] = "-created_at",
) -> UserPage:
    order = (User.created_at.desc(), User.id.desc()) if sort.startswith("-") else (User.created_at, User.id)
    total = await db.scalar(select(func.count()).select_from(User))
    users = (await db.scalars(select(User).order_by(*order).limit(limit).offset(offset))).all()
    return UserPage(items=[UserRead.model_validate(u) for u in users], total=total or 0, limit=limit, offset=offset)


@app.patch("/api/v1/users/{user_id}", response_model=UserRead)
async def update_user(
    user_id: uuid.UUID,
    data: UserUpdate,
    caller: Annotated[User, Depends(current_user)],
    db: Annotated[AsyncSession, Depends(get_db)],
) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise HTTPException(404)
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(user, field, value)
    user.updated_at = dt.datetime.now(dt.UTC)
    await db.commit()
    return user


@app.post("/api/v1/auth/token")
async def token(
    username: Annotated[str, Form()], password: Annotated[str, Form()], db: Annotated[AsyncSession, Depends(get_db)]
) -> dict[str, object]:
    user = await db.scalar(select(User).where(User.email == username.lower()))
    try:
        hasher.verify(user.hashed_password if user else "", password)  # the way the tutorials do it: on the loop
    except Exception as exc:
        raise HTTPException(401, "wrong credentials") from exc
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims = {"iss": "accounts", "aud": "accounts", "sub": str(user.id), "iat": now, "exp": now + 900}  # type: ignore[union-attr]
    return {"access_token": jwt.encode(claims, PRIVATE_KEY, algorithm="EdDSA"), "token_type": "bearer"}
