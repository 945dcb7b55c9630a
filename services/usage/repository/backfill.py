"""SQL of a backfill: lock a window's periods, recompute from the raw events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.usage.repository.ingest import driver_connection


@dataclass(frozen=True)
class PeriodKey:
    subscription_id: str
    period_start: datetime
    period_end: datetime
    closed: bool


@dataclass(frozen=True)
class Recomputed:
    aggregation: str | None
    org_id: str
    event_count: int
    total: Decimal | None
    top: Decimal | None
    uniques: int
    latest_value: Decimal | None
    latest_time: datetime | None
    latest_key: str | None


AggregateKey = tuple[str, str, datetime]  # subscription, metric, period start


async def lock_periods(
    session: AsyncSession, org_id: str, subscription_id: str, start: datetime, end: datetime
) -> list[PeriodKey]:
    """The periods overlapping ``[start, end)``, locked like a close would lock them.

    ``FOR UPDATE`` waits for in-flight ingestion into these periods and holds
    new ingestion off until commit, so the recomputation cannot lose an
    increment committed between reading the events and writing the aggregate.
    """
    driver = await driver_connection(session)
    rows = await driver.fetch(
        "SELECT subscription_id, period_start, period_end, closed FROM billing_period"
        " WHERE org_id = $1 AND ($2 = '' OR subscription_id = $2)"
        " AND period_end > $3 AND period_start < $4"
        " ORDER BY subscription_id, period_start FOR UPDATE",
        org_id,
        subscription_id,
        start,
        end,
    )
    return [
        PeriodKey(r["subscription_id"], r["period_start"], r["period_end"], r["closed"])
        for r in rows
    ]


def _period_arrays(periods: list[PeriodKey]) -> tuple[list[str], list[datetime]]:
    return [p.subscription_id for p in periods], [p.period_start for p in periods]


async def recompute(
    session: AsyncSession, periods: list[PeriodKey]
) -> dict[AggregateKey, Recomputed]:
    driver = await driver_connection(session)
    subs, starts = _period_arrays(periods)
    rows = await driver.fetch(
        """
        SELECT e.subscription_id, e.metric_code, e.period_start, min(e.org_id) AS org_id,
            min(m.aggregation) AS aggregation, count(*) AS n, sum(e.value) AS total,
            max(e.value) AS top, count(DISTINCT e.unique_value) AS uniques,
            (array_agg(e.value ORDER BY e.event_time DESC, e.idempotency_key DESC))[1]
                AS latest_value,
            max(e.event_time) AS latest_time,
            (array_agg(e.idempotency_key ORDER BY e.event_time DESC, e.idempotency_key DESC))[1]
                AS latest_key
        FROM usage_event e
        JOIN unnest($1::text[], $2::timestamptz[]) AS p(subscription_id, period_start)
            USING (subscription_id, period_start)
        LEFT JOIN metric m ON m.code = e.metric_code
        GROUP BY e.subscription_id, e.metric_code, e.period_start
        """,
        subs,
        starts,
    )
    return {
        (r["subscription_id"], r["metric_code"], r["period_start"]): Recomputed(
            aggregation=r["aggregation"],
            org_id=r["org_id"],
            event_count=r["n"],
            total=r["total"],
            top=r["top"],
            uniques=r["uniques"],
            latest_value=r["latest_value"],
            latest_time=r["latest_time"],
            latest_key=r["latest_key"],
        )
        for r in rows
    }


async def current(session: AsyncSession, periods: list[PeriodKey]) -> dict[AggregateKey, Any]:
    driver = await driver_connection(session)
    subs, starts = _period_arrays(periods)
    rows = await driver.fetch(
        "SELECT a.* FROM usage_aggregate a"
        " JOIN unnest($1::text[], $2::timestamptz[]) AS p(subscription_id, period_start)"
        " USING (subscription_id, period_start)",
        subs,
        starts,
    )
    return {(r["subscription_id"], r["metric_code"], r["period_start"]): r for r in rows}


async def write_aggregate(
    session: AsyncSession,
    key: AggregateKey,
    *,
    org_id: str,
    aggregation: str,
    period_end: datetime,
    value: Decimal,
    event_count: int,
    latest_time: datetime | None,
    latest_key: str | None,
    now: datetime,
) -> None:
    driver = await driver_connection(session)
    await driver.execute(
        """
        INSERT INTO usage_aggregate AS a (subscription_id, metric_code, period_start, org_id,
            aggregation, period_end, value, event_count, latest_time, latest_key, frozen,
            revision, emitted_revision, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false, 1, 0, $11)
        ON CONFLICT (subscription_id, metric_code, period_start) DO UPDATE SET
            value = excluded.value, event_count = excluded.event_count,
            latest_time = excluded.latest_time, latest_key = excluded.latest_key,
            revision = a.revision + 1, updated_at = excluded.updated_at
        WHERE NOT a.frozen
        """,
        *key,
        org_id,
        aggregation,
        period_end,
        value,
        event_count,
        latest_time,
        latest_key,
        now,
    )


async def restore_unique_values(session: AsyncSession, periods: list[PeriodKey]) -> None:
    """Put back any distinct value the side table lost (it is derived from events)."""
    driver = await driver_connection(session)
    subs, starts = _period_arrays(periods)
    await driver.execute(
        "INSERT INTO aggregate_unique_value (subscription_id, metric_code, period_start, value)"
        " SELECT DISTINCT e.subscription_id, e.metric_code, e.period_start, e.unique_value"
        " FROM usage_event e"
        " JOIN unnest($1::text[], $2::timestamptz[]) AS p(subscription_id, period_start)"
        " USING (subscription_id, period_start)"
        " WHERE e.unique_value IS NOT NULL"
        " ON CONFLICT DO NOTHING",
        subs,
        starts,
    )
