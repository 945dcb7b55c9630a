"""The floor: raw asyncpg COPY of the same rows into a twin of ``usage.usage_event``.

Same columns, same primary key (the dedup key) and the same indexes, in the
same durable database, committed in the same batch size as the gRPC paths:
what durable, deduplicated ingestion costs here with no service in between.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from devtools.bench.events import EventPlan

FLOOR_SCHEMA = "bench_floor"
COLUMNS = (
    "org_id",
    "idempotency_key",
    "metric_code",
    "subscription_id",
    "period_start",
    "event_time",
    "value",
    "unique_value",
    "properties",
    "received_at",
)


def _rows(
    plan: EventPlan, start: int, stop: int, subscription_of: dict[str, str], period: datetime
) -> list[tuple[Any, ...]]:
    now = plan.at
    return [
        (
            plan.org_of(i),
            plan.key_of(i),
            plan.metric_code,
            subscription_of[plan.org_of(i)],
            period,
            now,
            None,
            None,
            "{}",
            now,
        )
        for i in range(start, stop)
    ]


async def copy_floor(
    database_url: str,
    plan: EventPlan,
    *,
    subscription_of: dict[str, str],
    period_start: datetime,
    batch: int = 1000,
    concurrency: int = 4,
) -> float:
    """Seconds to COPY ``plan``'s rows, one committed transaction per ``batch``."""
    setup = await asyncpg.connect(database_url)
    try:
        await setup.execute(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
        await setup.execute(f"CREATE SCHEMA {FLOOR_SCHEMA}")
        await setup.execute(
            f"CREATE TABLE {FLOOR_SCHEMA}.usage_event (LIKE usage.usage_event INCLUDING ALL)"
        )
    finally:
        await setup.close()
    # Rows are built before the clock starts: the floor is the database's cost.
    chunks = [
        _rows(plan, start, min(start + batch, plan.count), subscription_of, period_start)
        for start in range(0, plan.count, batch)
    ]
    pool = await asyncpg.create_pool(database_url, min_size=concurrency, max_size=concurrency)
    try:

        async def worker() -> None:
            async with pool.acquire() as conn:
                while chunks:
                    rows = chunks.pop()
                    async with conn.transaction():
                        await conn.copy_records_to_table(
                            "usage_event",
                            schema_name=FLOOR_SCHEMA,
                            records=rows,
                            columns=list(COLUMNS),
                        )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await pool.close()
