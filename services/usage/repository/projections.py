"""Writes to the local projections of catalog metrics and subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.usage.repository.tables import (
    billing_period_table,
    feature_threshold_table,
    metric_table,
    subscription_table,
    usage_aggregate_table,
)


@dataclass(frozen=True)
class MetricRow:
    code: str
    metric_id: str
    aggregation: str
    property_key: str
    active: bool
    source_update_time: datetime | None


@dataclass(frozen=True)
class SubscriptionRow:
    subscription_id: str
    org_id: str
    state: str
    package_version_id: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    pause_time: datetime | None
    end_time: datetime | None
    source_update_time: datetime | None


def _not_older(column: ColumnElement[Any], incoming: datetime | None) -> ColumnElement[bool]:
    # Events of one producer arrive in order, but a replayed old event must
    # not roll a projection back.
    if incoming is None:
        return true()
    return or_(column.is_(None), column <= incoming)


async def upsert_metric(session: AsyncSession, row: MetricRow) -> None:
    t = metric_table
    values = {
        "code": row.code,
        "metric_id": row.metric_id,
        "aggregation": row.aggregation,
        "property_key": row.property_key,
        "active": row.active,
        "source_update_time": row.source_update_time,
        "updated_at": func.now(),
    }
    stmt = pg_insert(t).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.code],
        set_={k: stmt.excluded[k] for k in values if k != "code"},
        where=_not_older(t.c.source_update_time, row.source_update_time),
    )
    await session.execute(stmt)


async def upsert_subscription(session: AsyncSession, row: SubscriptionRow) -> None:
    t = subscription_table
    values = {
        "subscription_id": row.subscription_id,
        "org_id": row.org_id,
        "state": row.state,
        "package_version_id": row.package_version_id,
        "current_period_start": row.current_period_start,
        "current_period_end": row.current_period_end,
        "pause_time": row.pause_time,
        "end_time": row.end_time,
        "source_update_time": row.source_update_time,
        "updated_at": func.now(),
    }
    stmt = pg_insert(t).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.subscription_id],
        set_={k: stmt.excluded[k] for k in values if k != "subscription_id"},
        where=_not_older(t.c.source_update_time, row.source_update_time),
    )
    await session.execute(stmt)


async def upsert_open_period(
    session: AsyncSession, subscription_id: str, org_id: str, start: datetime, end: datetime
) -> None:
    """Record a period; an open one follows its latest end, a closed one never changes."""
    t = billing_period_table
    stmt = pg_insert(t).values(
        subscription_id=subscription_id, org_id=org_id, period_start=start, period_end=end
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.subscription_id, t.c.period_start],
        set_={"period_end": stmt.excluded.period_end},
        where=and_(t.c.closed.is_(False), t.c.period_end != stmt.excluded.period_end),
    )
    await session.execute(stmt)


async def close_period(
    session: AsyncSession,
    subscription_id: str,
    org_id: str,
    start: datetime,
    end: datetime,
    close_time: datetime,
) -> int:
    """Mark a period closed and freeze its aggregates; return how many froze.

    ``FOR UPDATE`` on the period row waits for every ingestion holding it
    ``FOR KEY SHARE``, so the aggregates frozen here are final: a batch that
    comes later reads the period as closed and rejects its events.
    """
    t = billing_period_table
    await session.execute(
        pg_insert(t)
        .values(subscription_id=subscription_id, org_id=org_id, period_start=start, period_end=end)
        .on_conflict_do_nothing()
    )
    await session.execute(
        select(t.c.closed)
        .where(t.c.subscription_id == subscription_id, t.c.period_start == start)
        .with_for_update()
    )
    await session.execute(
        update(t)
        .where(t.c.subscription_id == subscription_id, t.c.period_start == start)
        .values(closed=True, close_time=close_time, period_end=end)
    )
    a = usage_aggregate_table
    result = await session.execute(
        update(a)
        .where(a.c.subscription_id == subscription_id, a.c.period_start == start, ~a.c.frozen)
        .values(frozen=True, revision=a.c.revision + 1, updated_at=func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def advance_current_period(
    session: AsyncSession,
    subscription_id: str,
    closed_start: datetime,
    next_start: datetime,
    next_end: datetime,
) -> None:
    """Move a subscription whose current period just closed to the next one.

    The renewed event says the same later; doing it at the close means reads
    of "the current period" never point at a frozen one in between.
    """
    t = subscription_table
    await session.execute(
        update(t)
        .where(t.c.subscription_id == subscription_id, t.c.current_period_start == closed_start)
        .values(current_period_start=next_start, current_period_end=next_end, updated_at=func.now())
    )


@dataclass(frozen=True)
class ThresholdRow:
    feature_key: str
    metric_code: str
    threshold: Decimal


async def replace_thresholds(
    session: AsyncSession, package_version_id: str, rows: list[ThresholdRow]
) -> None:
    """A published version is immutable: its thresholds are written once, whole."""
    t = feature_threshold_table
    await session.execute(delete(t).where(t.c.package_version_id == package_version_id))
    if rows:
        await session.execute(
            pg_insert(t),
            [
                {
                    "package_version_id": package_version_id,
                    "feature_key": r.feature_key,
                    "metric_code": r.metric_code,
                    "threshold": r.threshold,
                }
                for r in rows
            ],
        )
