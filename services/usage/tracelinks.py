"""Span links from an aggregate read to the ingestion that last changed it.

Invoicing reads a period's aggregate long after the usage was ingested, in
another trace (the billing clock's). Linking the read to the ingestion's span
lets a trace viewer walk from an invoice to the requests that fed it. The
memory is per process and bounded: after a restart, or on another replica, a
read simply has no link; the traces themselves are unaffected.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.trace import SpanContext

MAX_REMEMBERED = 10_000

AggregateKey = tuple[str, str, datetime]  # subscription, metric code, period start

_last_ingestion: OrderedDict[AggregateKey, SpanContext] = OrderedDict()


def _key(subscription_id: str, metric_code: str, period_start: datetime) -> AggregateKey:
    start = (
        period_start.astimezone(UTC) if period_start.tzinfo else period_start.replace(tzinfo=UTC)
    )
    return (subscription_id, metric_code, start)


def links_wanted() -> bool:
    """Whether the current span is recorded, so a link to it could ever be seen."""
    return trace.get_current_span().is_recording()


def remember_ingestion(keys: Iterable[AggregateKey]) -> None:
    """Record the current span as the last ingestion into these aggregates."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    context = span.get_span_context()
    for subscription_id, metric_code, period_start in keys:
        key = _key(subscription_id, metric_code, period_start)
        _last_ingestion[key] = context
        _last_ingestion.move_to_end(key)
    while len(_last_ingestion) > MAX_REMEMBERED:
        _last_ingestion.popitem(last=False)


def link_last_ingestion(subscription_id: str, metric_code: str, period_start: datetime) -> None:
    """Link the current span (an aggregate read) to that aggregate's last ingestion."""
    context = _last_ingestion.get(_key(subscription_id, metric_code, period_start))
    if context is not None:
        trace.get_current_span().add_link(context, {"tally.link": "last_ingestion"})
