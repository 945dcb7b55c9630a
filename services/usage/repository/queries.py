"""Reads: aggregates, events, time series; and the throttled emitter's bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.usage.domain import Aggregation
from services.usage.repository.tables import (
    billing_period_table,
    metric_table,
    subscription_table,
    usage_aggregate_table,
    usage_event_table,
)


@dataclass(frozen=True)
class EventFilter:
    org_id: str = ""
    subscription_id: str = ""
    metric_code: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    idempotency_key: str = ""


# GetAggregate's reads (one call per charge of every closed period), built once.
_METRIC_AGGREGATION = select(metric_table.c.aggregation).where(
    metric_table.c.code == bindparam("code")
)
_SUBSCRIPTION = select(subscription_table).where(
    subscription_table.c.subscription_id == bindparam("sub")
)
_PERIOD = select(billing_period_table).where(
    billing_period_table.c.subscription_id == bindparam("sub"),
    billing_period_table.c.period_start == bindparam("start"),
)
_AGGREGATE = select(usage_aggregate_table).where(
    usage_aggregate_table.c.subscription_id == bindparam("sub"),
    usage_aggregate_table.c.metric_code == bindparam("metric"),
    usage_aggregate_table.c.period_start == bindparam("start"),
)


async def metric_aggregation(session: AsyncSession, code: str) -> Aggregation | None:
    found = await session.scalar(_METRIC_AGGREGATION, {"code": code})
    return Aggregation(found) if found else None


async def subscription(session: AsyncSession, subscription_id: str) -> Row[Any] | None:
    return (await session.execute(_SUBSCRIPTION, {"sub": subscription_id})).first()


async def period(session: AsyncSession, subscription_id: str, start: datetime) -> Row[Any] | None:
    return (await session.execute(_PERIOD, {"sub": subscription_id, "start": start})).first()


async def aggregate(
    session: AsyncSession, subscription_id: str, metric_code: str, start: datetime
) -> Row[Any] | None:
    params = {"sub": subscription_id, "metric": metric_code, "start": start}
    return (await session.execute(_AGGREGATE, params)).first()


async def aggregates(
    session: AsyncSession, subscription_id: str, start: datetime, after_code: str, limit: int
) -> Sequence[Row[Any]]:
    a = usage_aggregate_table
    stmt = select(a).where(a.c.subscription_id == subscription_id, a.c.period_start == start)
    if after_code:
        stmt = stmt.where(a.c.metric_code > after_code)
    return (await session.execute(stmt.order_by(a.c.metric_code).limit(limit))).all()


async def event_values(
    session: AsyncSession, subscription_id: str, metric_code: str, start: datetime
) -> list[Decimal]:
    e = usage_event_table
    rows = await session.execute(
        select(e.c.value)
        .where(
            e.c.subscription_id == subscription_id,
            e.c.metric_code == metric_code,
            e.c.period_start == start,
        )
        .order_by(e.c.event_time, e.c.idempotency_key)
    )
    return [v if v is not None else Decimal(1) for (v,) in rows]


async def events(
    session: AsyncSession, f: EventFilter, after: tuple[datetime, str, str] | None, limit: int
) -> Sequence[Row[Any]]:
    """Newest event_time first; ties by (org_id, idempotency_key), descending."""
    e = usage_event_table
    stmt = select(e)
    if f.org_id:
        stmt = stmt.where(e.c.org_id == f.org_id)
    if f.subscription_id:
        stmt = stmt.where(e.c.subscription_id == f.subscription_id)
    if f.metric_code:
        stmt = stmt.where(e.c.metric_code == f.metric_code)
    if f.start_time is not None:
        stmt = stmt.where(e.c.event_time >= f.start_time)
    if f.end_time is not None:
        stmt = stmt.where(e.c.event_time < f.end_time)
    if f.idempotency_key:
        stmt = stmt.where(e.c.idempotency_key == f.idempotency_key)
    if after is not None:
        stmt = stmt.where(tuple_(e.c.event_time, e.c.org_id, e.c.idempotency_key) < tuple_(*after))
    stmt = stmt.order_by(
        e.c.event_time.desc(), e.c.org_id.desc(), e.c.idempotency_key.desc()
    ).limit(limit)
    return (await session.execute(stmt)).all()


_BUCKET_VALUE = {
    Aggregation.COUNT: "count(*)::numeric",
    Aggregation.SUM: "sum(value)",
    Aggregation.MAX: "max(value)",
    Aggregation.UNIQUE_COUNT: "count(DISTINCT unique_value)::numeric",
    Aggregation.LATEST: "(array_agg(value ORDER BY event_time DESC, idempotency_key DESC))[1]",
}


async def buckets(
    session: AsyncSession,
    *,
    org_id: str,
    metric_code: str,
    subscription_id: str,
    start: datetime,
    end: datetime,
    width: timedelta,
    aggregation: Aggregation,
) -> dict[datetime, tuple[Decimal, int]]:
    """The metric's aggregation per bucket, computed from the raw events."""
    sql = text(
        f"SELECT date_bin(:width, event_time, :origin) AS bucket,"
        f" {_BUCKET_VALUE[aggregation]} AS value, count(*) AS n"
        " FROM usage_event"
        " WHERE org_id = :org AND metric_code = :metric"
        " AND event_time >= :start AND event_time < :end"
        " AND (:sub = '' OR subscription_id = :sub)"
        " GROUP BY 1"
    )
    rows = await session.execute(
        sql,
        {
            "width": width,
            "origin": start,
            "org": org_id,
            "metric": metric_code,
            "start": start,
            "end": end,
            "sub": subscription_id,
        },
    )
    return {r.bucket: (r.value if r.value is not None else Decimal(0), r.n) for r in rows}


async def due_aggregates(
    session: AsyncSession, *, now: datetime, min_interval: timedelta, limit: int
) -> Sequence[Row[Any]]:
    """Aggregates changed since last emitted and not emitted within ``min_interval``.

    ``SKIP LOCKED``: rows an ingestion is updating right now wait for the next
    round instead of stalling it; a second worker replica takes other rows.
    """
    a = usage_aggregate_table
    stmt = (
        select(a)
        .where(
            a.c.revision > a.c.emitted_revision,
            or_(a.c.emitted_at.is_(None), a.c.emitted_at <= now - min_interval),
        )
        .order_by(a.c.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(stmt)).all()


async def mark_emitted(session: AsyncSession, rows: Sequence[Row[Any]], now: datetime) -> None:
    """Record the revision each row was emitted at (one pipelined executemany)."""
    if not rows:
        return
    a = usage_aggregate_table
    stmt = (
        update(a)
        .where(
            a.c.subscription_id == bindparam("b_sub"),
            a.c.metric_code == bindparam("b_metric"),
            a.c.period_start == bindparam("b_start"),
        )
        .values(emitted_revision=bindparam("b_rev"), emitted_at=now)
    )
    await session.connection()
    await session.execute(
        stmt,
        [
            {
                "b_sub": r.subscription_id,
                "b_metric": r.metric_code,
                "b_start": r.period_start,
                "b_rev": r.revision,
            }
            for r in rows
        ],
    )


async def record_crossings(session: AsyncSession, rows: Sequence[Row[Any]]) -> list[Row[Any]]:
    """Thresholds the given aggregates have reached and not crossed before in the period.

    The crossing row is inserted ``ON CONFLICT DO NOTHING RETURNING``, so each
    threshold is reported once per period even with two emitters racing.
    """
    live = [r for r in rows if r.value > 0]
    if not live:
        return []
    result = await session.execute(
        text(
            "INSERT INTO threshold_crossing"
            " (subscription_id, metric_code, period_start, feature_key, threshold)"
            " SELECT d.subscription_id, d.metric_code, d.period_start, f.feature_key, f.threshold"
            " FROM unnest(CAST(:subs AS text[]), CAST(:metrics AS text[]),"
            "   CAST(:starts AS timestamptz[]), CAST(:vals AS numeric[]))"
            "   AS d(subscription_id, metric_code, period_start, value)"
            " JOIN subscription s ON s.subscription_id = d.subscription_id"
            " JOIN feature_threshold f ON f.package_version_id = s.package_version_id"
            "   AND f.metric_code = d.metric_code"
            " WHERE d.value >= f.threshold"
            " ORDER BY 1, 2, 3, 4"
            " ON CONFLICT DO NOTHING"
            " RETURNING subscription_id, metric_code, period_start, feature_key, threshold"
        ),
        {
            "subs": [r.subscription_id for r in live],
            "metrics": [r.metric_code for r in live],
            "starts": [r.period_start for r in live],
            "vals": [r.value for r in live],
        },
    )
    return list(result.all())
