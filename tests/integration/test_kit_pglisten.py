"""The kit's PostgreSQL listener: hears NOTIFY once committed, tells its owner
when it stops and starts listening, comes back after its backend is killed,
and closes its connection when cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from services.kit.pglisten import PgListener
from tests.support.databases import backends_named

pytestmark = pytest.mark.integration

CHANNEL = "tally_test_channel"
NAME = "tally-test-listener"


class Owner:
    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.states: list[bool] = []

    def notify(self, payload: str) -> None:
        if payload == "boom":
            raise ValueError("cannot apply")
        self.payloads.append(payload)

    def listening(self, up: bool) -> None:
        self.states.append(up)


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def listening(database_url: str, owner: Owner) -> AsyncIterator[asyncio.Task[None]]:
    listener = PgListener(
        database_url, CHANNEL, owner.notify, owner.listening, application_name=NAME
    )
    task = asyncio.create_task(listener.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def listeners(conn: asyncpg.Connection) -> list[int]:
    return await backends_named(conn, NAME)


async def test_hears_commits_only_and_comes_back_after_losing_its_backend(
    database_url: str,
) -> None:
    owner = Owner()
    conn = await asyncpg.connect(database_url)
    try:
        async with listening(database_url, owner):

            async def up() -> bool:
                return owner.states[-1:] == [True]

            await eventually(up)
            async with conn.transaction():
                await conn.execute("SELECT pg_notify($1, 'kept')", CHANNEL)
            tx = conn.transaction()
            await tx.start()
            await conn.execute("SELECT pg_notify($1, 'rolled back')", CHANNEL)
            await tx.rollback()
            await conn.execute("SELECT pg_notify($1, 'after')", CHANNEL)

            async def heard() -> bool:
                return owner.payloads == ["kept", "after"]

            await eventually(heard)
            (old,) = await listeners(conn)
            await conn.execute("SELECT pg_terminate_backend($1)", old)

            async def back() -> bool:
                pids = await listeners(conn)
                return owner.states == [True, False, True] and pids != [old] and len(pids) == 1

            await eventually(back)
            await conn.execute("SELECT pg_notify($1, 'again')", CHANNEL)

            async def heard_again() -> bool:
                return owner.payloads[-1:] == ["again"]

            await eventually(heard_again)
            # A notification its owner cannot apply counts as lost, like the connection.
            await conn.execute("SELECT pg_notify($1, 'boom')", CHANNEL)

            async def reconnected() -> bool:
                return owner.states == [True, False, True, False, True]

            await eventually(reconnected)
        assert owner.states[-1] is False

        async def closed() -> bool:
            return await listeners(conn) == []

        await eventually(closed)
    finally:
        await conn.close()


async def test_keeps_trying_while_postgres_is_away_and_stops_when_cancelled() -> None:
    owner = Owner()
    attempts = 0

    class Counting(PgListener):
        async def _open(self) -> tuple[object, asyncio.Event]:
            nonlocal attempts
            attempts += 1
            return await super()._open()

    listener = Counting(
        "postgresql://postgres@127.0.0.1:1/nowhere",
        CHANNEL,
        owner.notify,
        owner.listening,
        application_name=NAME,
        max_backoff_seconds=0.05,
    )
    task = asyncio.create_task(listener.run())

    async def retried() -> bool:
        return attempts >= 3

    await eventually(retried)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert owner.states == []  # never told it was listening
