"""Reads for invoicing, the portal and the admin explorer."""

from __future__ import annotations

from collections.abc import Sequence
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


def _no_current_period(subscription_id: str) -> NotFound:
    return NotFound(
        f"subscription {subscription_id} has no current period", reason="PERIOD_NOT_FOUND"
    )


def _period_not_found(subscription_id: str, start: datetime) -> NotFound:
    return NotFound(
        f"subscription {subscription_id} has no period starting {start.isoformat()}",
        reason="PERIOD_NOT_FOUND",
        metadata={"period_start_time": start.isoformat()},
    )


def _metric_not_found(metric_code: str) -> NotFound:
    return NotFound(f"metric {metric_code} not found", reason="METRIC_NOT_FOUND")


def _nothing_recorded(
    subscription_id: str,
    org_id: str,
    metric_code: str,
    aggregation: Aggregation,
    start: datetime,
    end: datetime,
    closed: bool,
) -> AggregateView:
    return AggregateView(
        subscription_id=subscription_id,
        org_id=org_id,
        metric_code=metric_code,
        aggregation=aggregation,
        period_start=start,
        period_end=end,
        value=Decimal(0),
        event_count=0,
        frozen=closed,
        update_time=None,
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
        raise _no_current_period(subscription_id)
    period = await queries.period(session, subscription_id, start)
    if period is None:
        raise _period_not_found(subscription_id, start)
    return sub, start, period.period_end, period.closed


@dataclass(frozen=True)
class AggregateRequest:
    """GetAggregate's arguments, and one item of a batch read."""

    subscription_id: str
    metric_code: str
    period_start: datetime | None = None
    org_id: str = ""
    include_event_values: bool = False


def _item_view(request: AggregateRequest, row: Row[Any]) -> AggregateView:
    """The answer to ``request`` from its row of the batch read, or NotFound:
    subscription (and org), then period, then metric, in that order."""
    if not row.s_found or (request.org_id and row.s_org_id != request.org_id):
        raise _subscription_not_found(request.subscription_id)
    start = request.period_start or row.s_current_start
    if start is None:
        raise _no_current_period(request.subscription_id)
    if row.p_start is None:
        raise _period_not_found(request.subscription_id, start)
    if row.subscription_id is not None:
        return aggregate_view(row)
    if not row.m_aggregation:
        raise _metric_not_found(request.metric_code)
    return _nothing_recorded(
        request.subscription_id,
        row.s_org_id,
        request.metric_code,
        Aggregation(row.m_aggregation),
        row.p_start,
        row.p_end,
        row.p_closed,
    )


class _MissingItem(Exception):
    """An item ``get_aggregate`` would answer NOT_FOUND, with its place in the batch."""

    def __init__(self, index: int, error: NotFound) -> None:
        super().__init__(error.message)
        self.index = index
        self.error = error


async def _read_aggregates(
    session: AsyncSession, requests: Sequence[AggregateRequest]
) -> list[tuple[AggregateView, list[Decimal]]]:
    """Each request's aggregate and event values, in order, in two statements at
    most; raises ``_MissingItem`` for the first request that is not found."""
    rows = await queries.batch_aggregates(
        session,
        [queries.AggregateKey(r.subscription_id, r.metric_code, r.period_start) for r in requests],
    )
    views: list[AggregateView] = []
    for index, (request, row) in enumerate(zip(requests, rows, strict=True)):
        try:
            views.append(_item_view(request, row))
        except NotFound as err:
            raise _MissingItem(index, err) from None
    values = await queries.batch_event_values(
        session,
        [
            (i, v.subscription_id, v.metric_code, v.period_start)
            for i, (r, v) in enumerate(zip(requests, views, strict=True))
            if r.include_event_values
        ],
    )
    return [(v, values.get(i, [])) for i, v in enumerate(views)]


async def get_aggregate(
    session: AsyncSession, request: AggregateRequest
) -> tuple[AggregateView, list[Decimal]]:
    """One aggregate as invoicing rates it; zero when nothing was recorded.

    It is a batch of one, so GetAggregate and BatchGetAggregates cannot drift
    apart, and it costs two statements at most instead of four or five.
    """
    try:
        (answer,) = await _read_aggregates(session, [request])
    except _MissingItem as missing:
        raise missing.error from None
    return answer


async def batch_get_aggregates(
    session: AsyncSession, requests: Sequence[AggregateRequest]
) -> list[tuple[AggregateView, list[Decimal]]]:
    """``get_aggregate`` of each request, in order, in two statements at most.

    A request ``get_aggregate`` answers NOT_FOUND fails the whole batch with
    that error (AIP-231), naming the first such request by its ``index``.
    """
    if not requests:
        return []
    try:
        return await _read_aggregates(session, requests)
    except _MissingItem as missing:
        err = missing.error
        raise NotFound(
            f"requests[{missing.index}]: {err.message}",
            reason=err.reason,
            metadata={**err.metadata, "index": str(missing.index)},
        ) from None


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
