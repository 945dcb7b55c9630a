"""How a metric folds the events of a period into one quantity.

This is the reference semantics: the ingestion SQL applies the same rules
incrementally (one batch summary merged into the stored aggregate), and the
property tests check that merging batch summaries equals folding the distinct
events at once, whatever the batches and duplicates.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal


class Aggregation(enum.StrEnum):
    """Stored as these strings in the usage schema."""

    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"

    @property
    def needs_value(self) -> bool:
        # Identity tests: asked once per event, and cheaper than a containment test.
        return self is Aggregation.SUM or self is Aggregation.MAX or self is Aggregation.LATEST

    @property
    def needs_property(self) -> bool:
        return self is Aggregation.UNIQUE_COUNT

    @property
    def allows_negative(self) -> bool:
        # Decision: no aggregation takes negative values in v1. Sums are
        # rated as quantities (a negative period total would rate as a
        # credit nobody approved); corrections go through backfill or a
        # credit memo. Max and latest measure standing quantities.
        return False


@dataclass(frozen=True)
class StoredEvent:
    """What aggregation needs of one stored event."""

    idempotency_key: str
    event_time: datetime
    value: Decimal | None = None
    unique_value: str | None = None


@dataclass(frozen=True)
class AggregateState:
    """An aggregate as stored: its value plus what later merges need."""

    value: Decimal = Decimal(0)
    event_count: int = 0
    # (event_time, idempotency_key) of the latest event: the tie-break that
    # makes LATEST independent of arrival order.
    latest_time: datetime | None = None
    latest_key: str | None = None
    uniques: frozenset[str] = field(default_factory=frozenset)


def _is_later(time: datetime, key: str, state: AggregateState) -> bool:
    if state.latest_time is None or state.latest_key is None:
        return True
    return (time, key) > (state.latest_time, state.latest_key)


def fold_into(
    state: AggregateState, aggregation: Aggregation, events: Iterable[StoredEvent]
) -> AggregateState:
    """Merge newly stored (never before counted) events into ``state``.

    The caller guarantees each event is new: deduplication happens before
    aggregation (the unique key of the raw table decides in SQL).
    """
    value = state.value
    count = state.event_count
    latest_time, latest_key = state.latest_time, state.latest_key
    uniques = set(state.uniques)
    current = state
    for event in events:
        count += 1
        later = _is_later(event.event_time, event.idempotency_key, current)
        if later:
            latest_time, latest_key = event.event_time, event.idempotency_key
        if aggregation is Aggregation.COUNT:
            value += 1
        elif aggregation is Aggregation.SUM:
            value += event.value or 0
        elif aggregation is Aggregation.MAX:
            candidate = event.value or Decimal(0)
            value = candidate if count == 1 else max(value, candidate)
        elif aggregation is Aggregation.UNIQUE_COUNT:
            if event.unique_value is not None and event.unique_value not in uniques:
                uniques.add(event.unique_value)
                value += 1
        elif aggregation is Aggregation.LATEST and later:
            value = event.value or Decimal(0)
        current = replace(current, latest_time=latest_time, latest_key=latest_key)
    return AggregateState(
        value=value,
        event_count=count,
        latest_time=latest_time,
        latest_key=latest_key,
        uniques=frozenset(uniques),
    )


def fold(aggregation: Aggregation, events: Iterable[StoredEvent]) -> AggregateState:
    """The aggregate of a set of distinct events, from nothing."""
    return fold_into(AggregateState(), aggregation, events)


def bucket_starts(start: datetime, end: datetime, width: timedelta) -> list[datetime]:
    """Every bucket start of ``[start, end)``; ``start`` is already truncated."""
    starts: list[datetime] = []
    at = start
    while at < end:
        starts.append(at)
        at += width
    return starts
