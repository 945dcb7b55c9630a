"""Writes to the local projections of catalog metrics and subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, text, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.usage.repository.tables import (
    feature_threshold_table,
    metric_table,
)


@dataclass(frozen=True)
class MetricRow:
    code: str
    metric_id: str
    aggregation: str
    property_key: str
    active: bool
    source_update_time: datetime | None
    aliases: tuple[str, ...] = ()


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
    external_id: str = ""


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
        "aliases": list(row.aliases),
        "updated_at": func.now(),
    }
    stmt = pg_insert(t).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.code],
        set_={k: stmt.excluded[k] for k in values if k != "code"},
        where=_not_older(t.c.source_update_time, row.source_update_time),
    )
    await session.execute(stmt)


# The statements of the billing run as SQL built once: a subscription event and
# a period close each become one or two round trips instead of up to six, and
# no Core statement is constructed per event.
_UPSERT_SUBSCRIPTION = """
INSERT INTO subscription AS s (subscription_id, org_id, state, package_version_id,
    current_period_start, current_period_end, pause_time, end_time, source_update_time,
    external_id, updated_at)
VALUES (:subscription_id, :org_id, :state, :package_version_id, :current_period_start,
    :current_period_end, :pause_time, :end_time, :source_update_time, :external_id, now())
ON CONFLICT (subscription_id) DO UPDATE SET
    org_id = excluded.org_id, state = excluded.state,
    package_version_id = excluded.package_version_id,
    current_period_start = excluded.current_period_start,
    current_period_end = excluded.current_period_end, pause_time = excluded.pause_time,
    end_time = excluded.end_time, source_update_time = excluded.source_update_time,
    external_id = excluded.external_id, updated_at = excluded.updated_at
-- Events of one producer arrive in order, but a replayed old event must not
-- roll the projection back.
WHERE excluded.source_update_time IS NULL OR s.source_update_time IS NULL
    OR s.source_update_time <= excluded.source_update_time
"""
# An open period follows its latest end; a closed one never changes.
_UPSERT_OPEN_PERIOD = """
INSERT INTO billing_period AS p (subscription_id, org_id, period_start, period_end)
SELECT :subscription_id, :org_id, CAST(:period_start AS timestamptz),
    CAST(:period_end AS timestamptz)
WHERE {only}
ON CONFLICT (subscription_id, period_start) DO UPDATE SET period_end = excluded.period_end
WHERE NOT p.closed AND p.period_end <> excluded.period_end
"""
_SUBSCRIPTION_AND_PERIOD = text(
    f"WITH sub AS ({_UPSERT_SUBSCRIPTION}) {_UPSERT_OPEN_PERIOD.format(only='true')}"
)
_SUBSCRIPTION_ONLY = text(_UPSERT_SUBSCRIPTION)
_LOCK_PERIOD = text(
    "SELECT closed FROM billing_period"
    " WHERE subscription_id = :subscription_id AND period_start = :period_start FOR UPDATE"
)
_ADD_PERIOD = text(
    "INSERT INTO billing_period (subscription_id, org_id, period_start, period_end)"
    " VALUES (:subscription_id, :org_id, :period_start, :period_end) ON CONFLICT DO NOTHING"
)
_CLOSE = """
WITH closed AS (
    UPDATE billing_period SET closed = true, close_time = :close_time, period_end = :period_end
    WHERE subscription_id = :subscription_id AND period_start = :period_start
), frozen AS (
    UPDATE usage_aggregate SET frozen = true, revision = revision + 1, updated_at = now()
    WHERE subscription_id = :subscription_id AND period_start = :period_start AND NOT frozen
    RETURNING 1
){advance}
SELECT count(*) FROM frozen
"""
# The next period opened, and the subscription moved to it if its current
# period is the one closing. One statement shares one snapshot, so the next
# period skips a start equal to the closing one (which the separate statements
# found closed already).
_ADVANCE = """, opened AS ({open_next}), advanced AS (
    UPDATE subscription SET current_period_start = :next_start,
        current_period_end = :next_end, updated_at = now()
    WHERE subscription_id = :subscription_id AND current_period_start = :period_start
)""".format(
    open_next=_UPSERT_OPEN_PERIOD.replace(":period_start", ":next_start")
    .replace(":period_end", ":next_end")
    .format(only="CAST(:next_start AS timestamptz) <> CAST(:period_start AS timestamptz)")
)
_CLOSE_ONLY = text(_CLOSE.format(advance=""))
_CLOSE_AND_ADVANCE = text(_CLOSE.format(advance=_ADVANCE))


def _subscription_params(row: SubscriptionRow) -> dict[str, Any]:
    return {
        "subscription_id": row.subscription_id,
        "org_id": row.org_id,
        "state": row.state,
        "package_version_id": row.package_version_id,
        "current_period_start": row.current_period_start,
        "current_period_end": row.current_period_end,
        "pause_time": row.pause_time,
        "end_time": row.end_time,
        "source_update_time": row.source_update_time,
        "external_id": row.external_id,
    }


async def upsert_subscription(
    session: AsyncSession, row: SubscriptionRow, *, with_open_period: bool = False
) -> None:
    """The subscription as it is now; ``with_open_period`` also records its
    current period (an open period follows its latest end, a closed one never
    changes) in the same statement."""
    params = _subscription_params(row)
    if with_open_period:
        params["period_start"] = row.current_period_start
        params["period_end"] = row.current_period_end
        await session.execute(_SUBSCRIPTION_AND_PERIOD, params)
    else:
        await session.execute(_SUBSCRIPTION_ONLY, params)


async def close_period(
    session: AsyncSession,
    subscription_id: str,
    org_id: str,
    start: datetime,
    end: datetime,
    close_time: datetime,
    next_period: tuple[datetime, datetime] | None = None,
) -> int:
    """Mark a period closed and freeze its aggregates; return how many froze.

    ``FOR UPDATE`` on the period row waits for every ingestion holding it
    ``FOR KEY SHARE``, so the aggregates frozen here are final: a batch that
    comes later reads the period as closed and rejects its events. The lock is
    a statement of its own: the freeze that follows must see every aggregate
    committed while it waited, and a statement sees only its start's snapshot.

    ``next_period`` (start, end): open it and move the subscription whose
    current period is closing there, in the freezing statement.
    """
    params: dict[str, Any] = {
        "subscription_id": subscription_id,
        "org_id": org_id,
        "period_start": start,
        "period_end": end,
    }
    if (await session.execute(_LOCK_PERIOD, params)).first() is None:
        await session.execute(_ADD_PERIOD, params)
        await session.execute(_LOCK_PERIOD, params)
    params["close_time"] = close_time
    if next_period is None:
        frozen = await session.scalar(_CLOSE_ONLY, params)
    else:
        params["next_start"], params["next_end"] = next_period
        frozen = await session.scalar(_CLOSE_AND_ADVANCE, params)
    return int(frozen or 0)


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
