"""The kit's pool pings a connection at checkout only after it sat idle: a
busy connection costs no extra round trip, an idle one whose server went
away is replaced before use, and a dead one used within the window fails once
and leaves the pool healthy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.exc import DBAPIError

from services.kit.db import Database

pytestmark = pytest.mark.integration


@asynccontextmanager
async def database(url: str, ping_idle_seconds: float) -> AsyncIterator[Database]:
    db = Database(url, "public", pool_size=1, ping_idle_seconds=ping_idle_seconds)
    try:
        yield db
    finally:
        await db.dispose()


async def backend_pid(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        # With a timeout it returns once the backend is gone, not just signalled.
        assert await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await conn.close()


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pool's pings; the real ping still runs."""
    calls: list[int] = []
    real = AsyncAdapt_asyncpg_connection.ping

    def counted(self: Any) -> None:
        calls.append(1)
        real(self)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counted)
    return calls


async def test_a_connection_back_in_the_pool_a_moment_ago_is_not_pinged(
    database_url: str, pings: list[int]
) -> None:
    async with database(database_url, ping_idle_seconds=60) as db:
        first = await backend_pid(db)
        for _ in range(5):
            assert await backend_pid(db) == first
    assert pings == []


async def test_an_idle_connection_is_pinged_and_replaced_when_its_server_went_away(
    database_url: str, pings: list[int]
) -> None:
    async with database(database_url, ping_idle_seconds=0.05) as db:
        first = await backend_pid(db)
        await terminate(database_url, first)
        await asyncio.sleep(0.1)
        # The use case never sees the dead connection.
        second = await backend_pid(db)
    assert second != first
    assert len(pings) == 1


async def test_zero_pings_every_checkout(database_url: str, pings: list[int]) -> None:
    async with database(database_url, ping_idle_seconds=0) as db:
        for _ in range(3):
            await backend_pid(db)
    # The first checkout is a fresh connection; every later one is pinged.
    assert len(pings) == 2


async def test_a_dead_connection_used_within_the_window_fails_once_then_the_pool_recovers(
    database_url: str, pings: list[int]
) -> None:
    async with database(database_url, ping_idle_seconds=60) as db:
        first = await backend_pid(db)
        await terminate(database_url, first)
        with pytest.raises(DBAPIError) as failure:
            await backend_pid(db)
        assert failure.value.connection_invalidated
        second = await backend_pid(db)
    assert second != first
    assert pings == []
