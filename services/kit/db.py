"""PostgreSQL through SQLAlchemy 2 async on asyncpg, one schema per service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from services.kit.errors import StartupError
from services.kit.settings import asyncpg_url

# Predictable constraint names, so migrations can name what they drop and
# errors can be mapped by constraint (e.g. a unique key to ALREADY_EXISTS).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata(schema: str) -> MetaData:
    """Metadata for one service's tables, all living in that service's schema."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def redact(url: str) -> str:
    """A URL fit for an error line: host, port and database, never the password."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"


class Database:
    """The engine and session factory of one service.

    ``search_path`` is pinned to the service schema so ad-hoc SQL in a
    repository cannot read another service's tables by accident.
    """

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        logical_schema: str | None = None,
        pool_size: int = 10,
        ping_idle_seconds: float = 1.0,
        echo: bool = False,
    ) -> None:
        self.url = asyncpg_url(url)
        self.schema = schema
        engine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            echo=echo,
            connect_args={"server_settings": {"search_path": f"{schema},public"}},
        )
        ping_when_idle(engine.sync_engine, ping_idle_seconds)
        # Tables are declared in the service's logical schema ("usage"); ops may
        # place it elsewhere with DB_SCHEMA, and this map renames it per query.
        if logical_schema and logical_schema != schema:
            engine = engine.execution_options(schema_translate_map={logical_schema: schema})
        self.engine: AsyncEngine = engine
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def check(self, timeout: float = 10.0) -> None:
        """Fail fast with one clear line when PostgreSQL is unreachable."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except TimeoutError:
            raise StartupError(
                f"database unreachable at {redact(self.url)}: no answer within {timeout:g}s"
            ) from None
        except Exception as exc:
            raise StartupError(
                f"database unreachable at {redact(self.url)}: {_first_line(exc)}"
            ) from None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


_RETURNED_AT = "tally.returned_at"


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout only when it sat idle that long.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one more round
    trip per transaction, about a tenth of a busy consumer's statements. A
    connection returned a moment ago is all but certainly alive, so only one
    idle for ``idle_seconds`` or more is pinged (0 pings every checkout). The
    price: when PostgreSQL goes away, a connection used within that window
    fails the one use case that finds out, and SQLAlchemy then invalidates the
    rest of the pool, so the retry (or the next call) connects afresh.
    """

    @event.listens_for(engine, "checkin")
    def returned(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at < idle_seconds:
            return  # just connected, or just used
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool discards this connection and checks out another.
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip() or type(exc).__name__
    return text_.splitlines()[0]
