"""Throttled ``usage.aggregated`` events, through the outbox.

Ingestion only bumps an aggregate's ``revision``; this periodic job emits the
aggregates whose revision moved since last emitted and that were not emitted
within the interval, so a hot aggregate produces one event per interval
however many batches touch it, and the event carries the period total.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row
from tally.events.v1 import usage_events_pb2

from services.kit.protoconv import format_decimal
from services.kit.uow import UnitOfWork
from services.usage.handlers.queries import aggregate_view
from services.usage.protomap import aggregate_message
from services.usage.repository import queries

EMIT_BATCH = 500


async def emit_aggregated(
    uow: UnitOfWork, *, now: datetime, min_interval: timedelta, limit: int = EMIT_BATCH
) -> int:
    """Emit one event per due aggregate; the caller commits. Returns how many."""
    rows = await queries.due_aggregates(
        uow.session, now=now, min_interval=min_interval, limit=limit
    )
    for row in rows:
        uow.emit(
            usage_events_pb2.UsageAggregatedEvent(
                aggregate=aggregate_message(aggregate_view(row)), revision=row.revision
            ),
            aggregate_id=row.subscription_id,
        )
    await queries.mark_emitted(uow.session, rows, now)
    await _thresholds(uow, rows)
    return len(rows)


async def _thresholds(uow: UnitOfWork, rows: Sequence[Row[Any]]) -> None:
    """``usage.threshold_crossed`` for every feature limit a due aggregate reached.

    Checked here rather than per batch so ingestion stays one statement; the
    alert is as timely as the throttled aggregate (one interval at most).
    """
    crossed = await queries.record_crossings(uow.session, rows)
    by_key = {(r.subscription_id, r.metric_code, r.period_start): r for r in rows}
    for c in crossed:
        row = by_key[(c.subscription_id, c.metric_code, c.period_start)]
        uow.emit(
            usage_events_pb2.UsageThresholdCrossedEvent(
                aggregate=aggregate_message(aggregate_view(row)),
                threshold=format_decimal(c.threshold),
                feature_key=c.feature_key,
            ),
            aggregate_id=c.subscription_id,
        )
