"""What one database round trip costs the calling process, by layer.

``python -m devtools.bench.roundtrip`` starts a durable embedded PostgreSQL of
its own and prints the CPU a service process spends (``time.process_time``,
so the server's share is not in it) on the same primary-key read:

- raw asyncpg, the driver alone;
- SQLAlchemy Core on asyncpg through the kit's ``Database`` session, which
  every repository uses;
- a whole unit of work (``services.kit.uow.UnitOfWork``): begin, that read,
  commit, against the same in raw asyncpg.

The billing run makes about thirty statements and eight transactions per
subscription across the services, so these figures say how much of its CPU
is the data layer rather than billing (docs/performance.md, round 5).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select

from services.kit import eventloop
from services.kit.db import Database
from services.kit.devstack.ports import free_port
from services.kit.devstack.postgres import EmbeddedPostgres
from services.kit.outbox import Outbox
from services.kit.tables import outbox_table
from services.kit.uow import UnitOfWork

SCHEMA = "bench_roundtrip"
ROWS = 1000
CALLS = 3000
WARMUP = 300

metadata = MetaData(schema=SCHEMA)
probe = Table("probe", metadata, Column("k", String, primary_key=True), Column("v", Integer))
outbox = outbox_table(metadata)
SQL = f"SELECT k, v FROM {SCHEMA}.probe WHERE k = $1"
STATEMENT = select(probe.c.k, probe.c.v).where(probe.c.k == bindparam("k"))


async def cpu_per_call(call: Callable[[int], Awaitable[object]], calls: int) -> float:
    """Microseconds of this process's CPU per call, after a warm-up."""
    for i in range(min(WARMUP, calls)):
        await call(i)
    started = time.process_time()
    for i in range(calls):
        await call(i)
    return 1e6 * (time.process_time() - started) / calls


def key(i: int) -> str:
    return f"k{i % ROWS}"


async def measure(dsn: str, calls: int = CALLS) -> list[tuple[str, float, float]]:
    """(what, raw asyncpg µs, through the kit µs) per probe."""
    conn = await asyncpg.connect(dsn)
    db = Database(dsn, SCHEMA)
    try:
        await conn.execute(
            f"CREATE SCHEMA {SCHEMA};"
            f" CREATE TABLE {SCHEMA}.probe (k text PRIMARY KEY, v int);"
            f" INSERT INTO {SCHEMA}.probe SELECT 'k' || g, g FROM generate_series(0, {ROWS - 1}) g"
        )
        async with db.engine.begin() as ddl:
            await ddl.run_sync(lambda sync: outbox.create(sync))

        async def raw_read(i: int) -> object:
            return await conn.fetchrow(SQL, key(i))

        async def raw_unit(i: int) -> object:
            async with conn.transaction():
                return await conn.fetchrow(SQL, key(i))

        async def kit_unit(i: int) -> object:
            async with UnitOfWork(db, Outbox(outbox)) as uow:
                row = (await uow.session.execute(STATEMENT, {"k": key(i)})).first()
                await uow.commit()
                return row

        async with db.session() as session, session.begin():

            async def kit_read(i: int) -> object:
                return (await session.execute(STATEMENT, {"k": key(i)})).first()

            reads = (await cpu_per_call(raw_read, calls), await cpu_per_call(kit_read, calls))
        units = (await cpu_per_call(raw_unit, calls), await cpu_per_call(kit_unit, calls))
    finally:
        await conn.close()
        await db.dispose()
    return [
        ("one read by primary key, inside a transaction", *reads),
        ("a transaction: begin, that read, commit", *units),
    ]


def table(rows: list[tuple[str, float, float]]) -> str:
    lines = [
        "| what | raw asyncpg | SQLAlchemy Core via the kit | ratio |",
        "|---|---|---|---|",
    ]
    for what, raw, kit in rows:
        lines.append(f"| {what} | {raw:,.0f} µs | {kit:,.0f} µs | {kit / raw:.1f} |")
    return "\n".join(lines)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="tally-roundtrip-"))
    postgres = EmbeddedPostgres(root / "data", free_port(), durable=True)
    try:
        postgres.start()
        rows = eventloop.run(measure(postgres.dsn))
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"CPU of the calling process per call ({CALLS:,} calls each, after {WARMUP:,}):")
    print(table(rows))


if __name__ == "__main__":
    main()
