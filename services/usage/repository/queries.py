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


# Reads built once: the metric's aggregation (QueryUsage) and the subscription
# and its period (ListAggregates).
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


# GetAggregate and BatchGetAggregates: every requested (subscription, metric, period start or
# null for the current one) with its subscription, period, aggregate and
# metric, in request order (``i``), in one statement. Period columns are
# prefixed ``p_`` and the subscription's ``s_`` so the aggregate's columns keep
# the names ``aggregate_view`` reads.
_BATCH_AGGREGATES = text(
    "SELECT r.i, r.subscription_id AS r_sub, r.metric_code AS r_metric,"
    " s.subscription_id IS NOT NULL AS s_found, s.org_id AS s_org_id,"
    " s.current_period_start AS s_current_start,"
    " p.period_start AS p_start, p.period_end AS p_end, p.closed AS p_closed,"
    " a.subscription_id, a.org_id, a.metric_code, a.aggregation, a.period_start,"
    " a.period_end, a.value, a.event_count, a.frozen, a.updated_at, a.revision,"
    " m.aggregation AS m_aggregation"
    " FROM unnest(CAST(:subs AS text[]), CAST(:metrics AS text[]),"
    "   CAST(:starts AS timestamptz[])) WITH ORDINALITY"
    "   AS r(subscription_id, metric_code, period_start, i)"
    " LEFT JOIN subscription s ON s.subscription_id = r.subscription_id"
    " LEFT JOIN billing_period p ON p.subscription_id = r.subscription_id"
    "   AND p.period_start = coalesce(r.period_start, s.current_period_start)"
    " LEFT JOIN usage_aggregate a ON a.subscription_id = r.subscription_id"
    "   AND a.metric_code = r.metric_code AND a.period_start = p.period_start"
    " LEFT JOIN metric m ON m.code = r.metric_code"
    " ORDER BY r.i"
)
# Per-event values of several (subscription, metric, period) at once, tagged
# with the caller's index ``i``, each one's by event time, then idempotency key.
_BATCH_EVENT_VALUES = text(
    "SELECT r.i, e.value"
    " FROM unnest(CAST(:subs AS text[]), CAST(:metrics AS text[]),"
    "   CAST(:starts AS timestamptz[]), CAST(:idx AS int[]))"
    "   AS r(subscription_id, metric_code, period_start, i)"
    " JOIN usage_event e ON e.subscription_id = r.subscription_id"
    "   AND e.metric_code = r.metric_code AND e.period_start = r.period_start"
    " ORDER BY r.i, e.event_time, e.idempotency_key"
)


@dataclass(frozen=True)
class AggregateKey:
    subscription_id: str
    metric_code: str
    period_start: datetime | None  # None: the subscription's current period


async def batch_aggregates(
    session: AsyncSession, keys: Sequence[AggregateKey]
) -> Sequence[Row[Any]]:
    """One row per key, in key order (see ``_BATCH_AGGREGATES``)."""
    rows = await session.execute(
        _BATCH_AGGREGATES,
        {
            "subs": [k.subscription_id for k in keys],
            "metrics": [k.metric_code for k in keys],
            "starts": [k.period_start for k in keys],
        },
    )
    return rows.all()


async def batch_event_values(
    session: AsyncSession, wanted: Sequence[tuple[int, str, str, datetime]]
) -> dict[int, list[Decimal]]:
    """``event_values`` of each (index, subscription, metric, period start), by index."""
    found: dict[int, list[Decimal]] = {i: [] for i, _, _, _ in wanted}
    if not wanted:
        return found
    rows = await session.execute(
        _BATCH_EVENT_VALUES,
        {
            "idx": [i for i, _, _, _ in wanted],
            "subs": [s for _, s, _, _ in wanted],
            "metrics": [m for _, _, m, _ in wanted],
            "starts": [p for _, _, _, p in wanted],
        },
    )
    for i, value in rows:
        found[i].append(value if value is not None else Decimal(1))
    return found


async def metric_aggregation(session: AsyncSession, code: str) -> Aggregation | None:
    found = await session.scalar(_METRIC_AGGREGATION, {"code": code})
    return Aggregation(found) if found else None


async def subscription(session: AsyncSession, subscription_id: str) -> Row[Any] | None:
    return (await session.execute(_SUBSCRIPTION, {"sub": subscription_id})).first()


async def period(session: AsyncSession, subscription_id: str, start: datetime) -> Row[Any] | None:
    return (await session.execute(_PERIOD, {"sub": subscription_id, "start": start})).first()


async def aggregates(
    session: AsyncSession, subscription_id: str, start: datetime, after_code: str, limit: int
) -> Sequence[Row[Any]]:
    a = usage_aggregate_table
    stmt = select(a).where(a.c.subscription_id == subscription_id, a.c.period_start == start)
    if after_code:
        stmt = stmt.where(a.c.metric_code > after_code)
    return (await session.execute(stmt.order_by(a.c.metric_code).limit(limit))).all()


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
