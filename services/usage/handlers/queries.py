"""Reads for invoicing, the portal and the admin explorer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.errors import InvalidArgument, NotFound, Violations
from services.kit.pagination import PageToken, next_page_token, page_size
from services.usage.domain import Aggregation, bucket_starts
from services.usage.repository import queries
from services.usage.repository.queries import EventFilter

DEFAULT_PAGE_SIZE = 100
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_HOURLY_WINDOW = timedelta(days=90)
MAX_DAILY_WINDOW = timedelta(days=3 * 366)


@dataclass(frozen=True)
class AggregateView:
    subscription_id: str
    org_id: str
    metric_code: str
    aggregation: Aggregation
    period_start: datetime
    period_end: datetime
    value: Decimal
    event_count: int
    frozen: bool
    update_time: datetime | None
    revision: int = 0


def aggregate_view(row: Row[Any]) -> AggregateView:
    return AggregateView(
        subscription_id=row.subscription_id,
        org_id=row.org_id,
        metric_code=row.metric_code,
        aggregation=Aggregation(row.aggregation),
        period_start=row.period_start,
        period_end=row.period_end,
        value=row.value,
        event_count=row.event_count,
        frozen=row.frozen,
        update_time=row.updated_at,
        revision=row.revision,
    )


def _subscription_not_found(subscription_id: str) -> NotFound:
    return NotFound(
        f"subscription {subscription_id} not found",
        reason="SUBSCRIPTION_NOT_FOUND",
        metadata={"subscription_id": subscription_id},
    )


async def _period_of(
    session: AsyncSession, subscription_id: str, org_id: str, period_start: datetime | None
) -> tuple[Row[Any], datetime, datetime, bool]:
    """The subscription, and the requested (or current) period's bounds and state."""
    sub = await queries.subscription(session, subscription_id)
    if sub is None or (org_id and sub.org_id != org_id):
        raise _subscription_not_found(subscription_id)
    start = period_start or sub.current_period_start
    if start is None:
        raise NotFound(
            f"subscription {subscription_id} has no current period", reason="PERIOD_NOT_FOUND"
        )
    period = await queries.period(session, subscription_id, start)
    if period is None:
        raise NotFound(
            f"subscription {subscription_id} has no period starting {start.isoformat()}",
            reason="PERIOD_NOT_FOUND",
            metadata={"period_start_time": start.isoformat()},
        )
    return sub, start, period.period_end, period.closed


async def get_aggregate(
    session: AsyncSession,
    *,
    subscription_id: str,
    metric_code: str,
    period_start: datetime | None,
    org_id: str,
    include_event_values: bool,
) -> tuple[AggregateView, list[Decimal]]:
    """One aggregate as invoicing rates it; zero when nothing was recorded."""
    sub, start, end, closed = await _period_of(session, subscription_id, org_id, period_start)
    row = await queries.aggregate(session, subscription_id, metric_code, start)
    if row is not None:
        view = aggregate_view(row)
    else:
        aggregation = await queries.metric_aggregation(session, metric_code)
        if aggregation is None:
            raise NotFound(f"metric {metric_code} not found", reason="METRIC_NOT_FOUND")
        view = AggregateView(
            subscription_id=subscription_id,
            org_id=sub.org_id,
            metric_code=metric_code,
            aggregation=aggregation,
            period_start=start,
            period_end=end,
            value=Decimal(0),
            event_count=0,
            frozen=closed,
            update_time=None,
        )
    values: list[Decimal] = []
    if include_event_values:
        values = await queries.event_values(session, subscription_id, metric_code, start)
    return view, values


async def list_aggregates(
    session: AsyncSession,
    *,
    subscription_id: str,
    org_id: str,
    period_start: datetime | None,
    requested_page_size: int,
    page_token: str,
) -> tuple[list[AggregateView], str]:
    size = page_size(requested_page_size, default=DEFAULT_PAGE_SIZE)
    _, start, _, _ = await _period_of(session, subscription_id, org_id, period_start)
    filters = {"subscription_id": subscription_id, "org_id": org_id, "start": start.isoformat()}
    token = PageToken.decode(page_token, filters)
    after = str(token.after[0]) if token and token.after else ""
    rows = await queries.aggregates(session, subscription_id, start, after, size + 1)
    next_token = next_page_token(list(rows), size, lambda r: [r.metric_code], filters)
    return [aggregate_view(r) for r in rows[:size]], next_token


async def list_events(
    session: AsyncSession, f: EventFilter, *, requested_page_size: int, page_token: str
) -> tuple[list[Row[Any]], str]:
    """Newest first, keyset-paginated on (event_time, org_id, idempotency_key)."""
    size = page_size(requested_page_size, default=DEFAULT_PAGE_SIZE)
    filters = {
        "org_id": f.org_id,
        "subscription_id": f.subscription_id,
        "metric_code": f.metric_code,
        "start": f.start_time.isoformat() if f.start_time else "",
        "end": f.end_time.isoformat() if f.end_time else "",
        "key": f.idempotency_key,
    }
    token = PageToken.decode(page_token, filters)
    after: tuple[datetime, str, str] | None = None
    if token is not None:
        try:
            at, org, key = token.after
            after = (datetime.fromisoformat(str(at)), str(org), str(key))
        except (ValueError, TypeError):
            raise InvalidArgument.field("page_token", "is not a token this API issued") from None
    rows = list(await queries.events(session, f, after, size + 1))
    next_token = next_page_token(
        rows,
        size,
        lambda r: [r.event_time.isoformat(), r.org_id, r.idempotency_key],
        filters,
    )
    return rows[:size], next_token


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime
    value: Decimal
    event_count: int


def _truncate(at: datetime, width: timedelta) -> datetime:
    at = at.astimezone(UTC)
    if width == DAY:
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at.replace(minute=0, second=0, microsecond=0)


async def query_usage(
    session: AsyncSession,
    *,
    org_id: str,
    metric_code: str,
    start: datetime | None,
    end: datetime | None,
    hourly: bool,
    subscription_id: str,
) -> tuple[Aggregation, list[Bucket]]:
    """The metric's aggregation per bucket over ``[start, end)``, empty buckets included."""
    v = Violations()
    v.check(bool(org_id), "org_id", "is required")
    v.check(bool(metric_code), "metric_code", "is required")
    v.check(start is not None, "start_time", "is required")
    v.check(end is not None, "end_time", "is required")
    width = HOUR if hourly else DAY
    if (
        start is not None
        and end is not None
        and v.check(start < end, "end_time", "must be after start_time")
    ):
        limit = MAX_HOURLY_WINDOW if hourly else MAX_DAILY_WINDOW
        v.check(
            end - start <= limit,
            "end_time",
            f"must be at most {limit.days} days after start_time for this bucket",
        )
    v.raise_if_any()
    assert start is not None and end is not None
    aggregation = await queries.metric_aggregation(session, metric_code)
    if aggregation is None:
        raise NotFound(f"metric {metric_code} not found", reason="METRIC_NOT_FOUND")
    first = _truncate(start, width)
    found = await queries.buckets(
        session,
        org_id=org_id,
        metric_code=metric_code,
        subscription_id=subscription_id,
        start=first,
        end=end,
        width=width,
        aggregation=aggregation,
    )
    buckets = []
    for at in bucket_starts(first, end, width):
        value, count = found.get(at, (Decimal(0), 0))
        buckets.append(Bucket(at, at + width, value, count))
    return aggregation, buckets
