"""The peer: a fastapi-users 15 service as its documentation builds one.

SQLAlchemy (async, asyncpg) on PostgreSQL, JWT bearer tokens (HS256, 15 min),
bcrypt at cost 12 through pwdlib. Routes: POST /auth/register (JSON),
POST /auth/jwt/login (form), GET /users/me (bearer). Runs from the bench's
own virtualenv (`.peer-venv`), never from the service's.

    DATABASE_URL=postgresql+asyncpg://… python app.py --create-tables
    DATABASE_URL=postgresql+asyncpg://… python serve.py WORKERS PORT
"""

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import (
    AuthenticationBackend,
    BearerTransport,
    JWTStrategy,
)
from fastapi_users.db import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from fastapi_users.password import PasswordHelper
from pwdlib import PasswordHash
from pwdlib.hashers.bcrypt import BcryptHasher
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

SECRET = "the peer's own secret, for the benchmark only"
engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=20)
sessions = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET


async def user_database() -> AsyncIterator[SQLAlchemyUserDatabase]:
    async with sessions() as session:
        yield SQLAlchemyUserDatabase(session, User)


passwords = PasswordHelper(PasswordHash((BcryptHasher(rounds=12),)))


async def user_manager(
    database: Annotated[SQLAlchemyUserDatabase, Depends(user_database)],
) -> AsyncIterator[UserManager]:
    yield UserManager(database, passwords)


backend = AuthenticationBackend(
    name="jwt",
    transport=BearerTransport(tokenUrl="auth/jwt/login"),
    get_strategy=lambda: JWTStrategy(secret=SECRET, lifetime_seconds=900),
)
users = FastAPIUsers[User, uuid.UUID](user_manager, [backend])

app = FastAPI()
app.include_router(users.get_auth_router(backend), prefix="/auth/jwt")
app.include_router(users.get_register_router(UserRead, UserCreate), prefix="/auth")
app.include_router(users.get_users_router(UserRead, UserCreate), prefix="/users")


async def create_tables() -> None:
    """Once, before the workers start: several creating them at once collide."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()


if __name__ == "__main__" and sys.argv[1:] == ["--create-tables"]:
    asyncio.run(create_tables())
