"""Recomputing a window's aggregates from the stored events (``tally usage backfill``).

Aggregates are maintained incrementally at ingestion; a backfill is the audit
and repair path: it folds the raw events of every period overlapping the
window again, reports each aggregate that differs and, unless it is a dry run,
writes the recomputed figure. Frozen (invoiced) periods are reported, never
changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from services.kit.errors import Violations
from services.kit.uow import UnitOfWork
from services.usage.domain import Aggregation
from services.usage.repository import backfill as repo
from services.usage.repository.backfill import Recomputed


@dataclass(frozen=True)
class BackfillWindow:
    org_id: str
    subscription_id: str
    start: datetime
    end: datetime
    dry_run: bool


@dataclass(frozen=True)
class AggregateChange:
    subscription_id: str
    metric_code: str
    period_start: datetime
    old_value: Decimal
    new_value: Decimal
    old_event_count: int
    new_event_count: int
    frozen: bool


@dataclass
class BackfillReport:
    changes: list[AggregateChange] = field(default_factory=list)
    events_scanned: int = 0
    aggregates_checked: int = 0


def window_of(
    *,
    org_id: str,
    subscription_id: str,
    start: datetime | None,
    end: datetime | None,
    dry_run: bool,
) -> BackfillWindow:
    v = Violations()
    v.check(bool(org_id), "org_id", "is required")
    v.check(start is not None, "start_time", "is required")
    v.check(end is not None, "end_time", "is required")
    if start is not None and end is not None:
        v.check(start < end, "end_time", "must be after start_time")
    v.raise_if_any()
    assert start is not None and end is not None
    return BackfillWindow(org_id, subscription_id, start, end, dry_run)


def _value(aggregation: Aggregation, r: Recomputed) -> Decimal:
    if aggregation is Aggregation.COUNT:
        return Decimal(r.event_count)
    if aggregation is Aggregation.SUM:
        return r.total or Decimal(0)
    if aggregation is Aggregation.MAX:
        return r.top or Decimal(0)
    if aggregation is Aggregation.UNIQUE_COUNT:
        return Decimal(r.uniques)
    return r.latest_value or Decimal(0)


async def backfill(uow: UnitOfWork, w: BackfillWindow) -> BackfillReport:
    """The caller commits (or, for a dry run, may roll back: nothing was written)."""
    session = uow.session
    report = BackfillReport()
    periods = await repo.lock_periods(session, w.org_id, w.subscription_id, w.start, w.end)
    if not periods:
        return report
    by_period = {(p.subscription_id, p.period_start): p for p in periods}
    recomputed = await repo.recompute(session, periods)
    stored = await repo.current(session, periods)
    now = datetime.now(UTC)
    for key in sorted(set(recomputed) | set(stored)):
        report.aggregates_checked += 1
        period = by_period[(key[0], key[2])]
        old = stored.get(key)
        new = recomputed.get(key)
        if new is not None:
            report.events_scanned += new.event_count
        name = (new.aggregation if new else None) or (old["aggregation"] if old else "count")
        aggregation = Aggregation(name)
        new_value = _value(aggregation, new) if new else Decimal(0)
        new_count = new.event_count if new else 0
        old_value = old["value"] if old else Decimal(0)
        old_count = old["event_count"] if old else 0
        if (old_value, old_count) == (new_value, new_count):
            continue
        frozen = period.closed or bool(old and old["frozen"])
        report.changes.append(
            AggregateChange(
                key[0], key[1], key[2], old_value, new_value, old_count, new_count, frozen
            )
        )
        if w.dry_run or frozen:
            continue
        await repo.write_aggregate(
            session,
            key,
            org_id=new.org_id if new else (old["org_id"] if old else w.org_id),
            aggregation=aggregation.value,
            period_end=period.period_end,
            value=new_value,
            event_count=new_count,
            latest_time=new.latest_time if new else None,
            latest_key=new.latest_key if new else None,
            now=now,
        )
    if not w.dry_run:
        await repo.restore_unique_values(session, periods)
    return report
