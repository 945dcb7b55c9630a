"""Conversions between the usage service's values and its protobuf messages.

Shared by the gRPC adapter, the event consumers and the aggregated-event
emitter, so each mapping is written once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.subscriptions.v1 import resources_pb2 as subscriptions_pb2
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api

from services.kit.protoconv import (
    INVALID_INSTANT,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    format_decimal,
    from_timestamp,
    to_timestamp,
)
from services.usage.domain import Aggregation, IncomingEvent, RejectionReason, SubscriptionState
from services.usage.handlers.queries import AggregateRequest, AggregateView

AGGREGATION_FROM_PROTO: Mapping[Any, Aggregation] = {
    catalog_pb2.AGGREGATION_COUNT: Aggregation.COUNT,
    catalog_pb2.AGGREGATION_SUM: Aggregation.SUM,
    catalog_pb2.AGGREGATION_MAX: Aggregation.MAX,
    catalog_pb2.AGGREGATION_UNIQUE_COUNT: Aggregation.UNIQUE_COUNT,
    catalog_pb2.AGGREGATION_LATEST: Aggregation.LATEST,
}
AGGREGATION_TO_PROTO: Mapping[Aggregation, Any] = {v: k for k, v in AGGREGATION_FROM_PROTO.items()}

STATE_FROM_PROTO: Mapping[Any, SubscriptionState] = {
    subscriptions_pb2.SUBSCRIPTION_STATE_TRIALING: SubscriptionState.TRIALING,
    subscriptions_pb2.SUBSCRIPTION_STATE_ACTIVE: SubscriptionState.ACTIVE,
    subscriptions_pb2.SUBSCRIPTION_STATE_PAST_DUE: SubscriptionState.PAST_DUE,
    subscriptions_pb2.SUBSCRIPTION_STATE_PAUSED: SubscriptionState.PAUSED,
    subscriptions_pb2.SUBSCRIPTION_STATE_CANCELED: SubscriptionState.CANCELED,
}

REASON_TO_PROTO: Mapping[RejectionReason, Any] = {
    reason: usage_pb2.UsageRejectionReason.Value(f"USAGE_REJECTION_REASON_{reason.value}")
    for reason in RejectionReason
}


def timestamp_or_none(message: object, field: str) -> datetime | None:
    """An aware UTC datetime when ``field`` is set on ``message``, else None."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: Timestamp = getattr(message, field)
    return from_timestamp(ts, field=field)


# Epoch plus a positional timedelta is exact to the microsecond (as ToDatetime)
# and about three times cheaper than fromtimestamp(...).replace(microsecond=...),
# whose keyword call dominated decoding an event.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def incoming_events(events: Iterable[usage_pb2.UsageEvent]) -> list[IncomingEvent]:
    """Decode a batch in one loop: the per-event function call was a cost of its own."""
    decoded: list[IncomingEvent] = []
    append = decoded.append
    # Producers often stamp a run of events with one instant: reuse its datetime.
    last: tuple[int, int] | None = None
    last_at: datetime | None = None
    for event in events:
        at: datetime | None = None
        time_error = ""
        if event.HasField("event_time"):
            ts = event.event_time
            seconds, nanos = ts.seconds, ts.nanos
            if (seconds, nanos) == last:
                at = last_at
            elif (
                MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS
                and 0 <= nanos <= 999_999_999
            ):
                at = last_at = _EPOCH + timedelta(0, seconds, nanos // 1000)
                last = (seconds, nanos)
            else:
                # One bad clock must not cost its batch-mates: rejected alone.
                time_error = f"event_time (seconds={seconds}, nanos={nanos}) {INVALID_INSTANT}"
        properties = event.properties  # each access builds a new wrapper: once
        append(
            IncomingEvent(
                event.org_id,
                event.metric_code,
                event.idempotency_key,
                event.value,
                at,
                event.subscription_id,
                dict(properties) if properties else {},
                time_error,
                event.external_subscription_id,
            )
        )
    return decoded


def aggregate_request(request: usage_api.GetAggregateRequest) -> AggregateRequest:
    """GetAggregate's request, alone or as an item of BatchGetAggregates."""
    return AggregateRequest(
        subscription_id=request.subscription_id,
        metric_code=request.metric_code,
        period_start=timestamp_or_none(request, "period_start_time"),
        org_id=request.org_id,
        include_event_values=request.include_event_values,
    )


def aggregate_message(view: AggregateView) -> usage_pb2.UsageAggregate:
    return usage_pb2.UsageAggregate(
        subscription_id=view.subscription_id,
        org_id=view.org_id,
        metric_code=view.metric_code,
        aggregation=AGGREGATION_TO_PROTO[view.aggregation],
        period_start_time=to_timestamp(view.period_start),
        period_end_time=to_timestamp(view.period_end),
        value=format_decimal(view.value),
        event_count=view.event_count,
        frozen=view.frozen,
        update_time=to_timestamp(view.update_time),
    )


REASON_FROM_NAME: Mapping[str, RejectionReason] = {r.value: r for r in RejectionReason}
REASON_FROM_PROTO: Mapping[Any, RejectionReason] = {v: k for k, v in REASON_TO_PROTO.items()}


def rejected_message(row: Any, *, with_payload: bool = True) -> usage_pb2.RejectedUsageEvent:
    """A row of the rejection feed; ``with_payload=False`` for NATS (size)."""
    message = usage_pb2.RejectedUsageEvent(
        rejected_event_id=str(row.rejected_event_id),
        org_id=row.org_id,
        idempotency_key=row.idempotency_key,
        metric_code=row.metric_code,
        reason=REASON_TO_PROTO[REASON_FROM_NAME[row.reason]],
        message=row.message,
        reject_time=to_timestamp(row.rejected_at),
    )
    if with_payload:
        message.payload_json = json.dumps(row.payload, separators=(",", ":"), ensure_ascii=False)
    if row.event_time is not None:
        message.event_time.FromDatetime(row.event_time)
    return message
