"""Catalog and subscriptions events -> the usage service's projections.

Thin adapters: decode the event into the handler's terms and call it inside
the consumer's unit of work (the kit commits it with the inbox row).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import catalog_events_pb2 as catalog_events
from tally.events.v1 import subscriptions_events_pb2 as sub_events
from tally.subscriptions.v1 import resources_pb2 as subscriptions_pb2

from services.kit.consumer import Subscription
from services.kit.events import EventEnvelope
from services.kit.runtime import ServiceContext
from services.kit.uow import UnitOfWork
from services.usage.domain import SubscriptionState
from services.usage.handlers import projections
from services.usage.protomap import AGGREGATION_FROM_PROTO, STATE_FROM_PROTO, timestamp_or_none
from services.usage.repository.projections import MetricRow, SubscriptionRow, ThresholdRow


def metric_row(metric: catalog_pb2.BillableMetric) -> MetricRow:
    aggregation = AGGREGATION_FROM_PROTO.get(metric.aggregation)
    if aggregation is None:
        raise ValueError(f"metric {metric.code} has no aggregation")
    return MetricRow(
        code=metric.code,
        metric_id=metric.metric_id,
        aggregation=aggregation.value,
        property_key=metric.property_key,
        active=metric.state != catalog_pb2.METRIC_STATE_ARCHIVED,
        source_update_time=timestamp_or_none(metric, "update_time"),
        aliases=tuple(metric.aliases),
    )


def thresholds(version: catalog_pb2.PackageVersion) -> list[ThresholdRow]:
    """Metered feature limits on a metric; unlimited or unparsable ones are none."""
    rows = []
    for limit in version.feature_limits:
        if not limit.metric_code or limit.unlimited or not limit.resets_each_period:
            continue
        try:
            value = Decimal(limit.limit)
        except InvalidOperation:
            continue
        if value.is_finite() and value >= 0:
            rows.append(ThresholdRow(limit.feature_key, limit.metric_code, value))
    return rows


async def on_package_published(
    uow: UnitOfWork, event: catalog_events.PackagePublishedEvent, envelope: EventEnvelope
) -> None:
    version = event.package_version
    await projections.apply_package_version(uow, version.package_version_id, thresholds(version))


async def on_metric(uow: UnitOfWork, event: Any, envelope: EventEnvelope) -> None:
    await projections.apply_metric(uow, metric_row(event.metric))


def subscription_row(
    sub: subscriptions_pb2.Subscription, *, ended_at: datetime | None = None
) -> SubscriptionRow:
    state = STATE_FROM_PROTO.get(sub.state, SubscriptionState.ACTIVE)
    end_time = None
    if state is SubscriptionState.CANCELED:
        end_time = ended_at or timestamp_or_none(sub, "cancel_time")
    return SubscriptionRow(
        subscription_id=sub.subscription_id,
        org_id=sub.org_id,
        state=state.value,
        package_version_id=sub.package_version_id,
        current_period_start=timestamp_or_none(sub, "current_period_start_time"),
        current_period_end=timestamp_or_none(sub, "current_period_end_time"),
        pause_time=timestamp_or_none(sub, "pause_time"),
        end_time=end_time,
        source_update_time=timestamp_or_none(sub, "update_time"),
        external_id=sub.external_id,
    )


async def on_subscription(uow: UnitOfWork, event: Any, envelope: EventEnvelope) -> None:
    """created/changed/paused/resumed/trial_ended/renewed: each carries the subscription."""
    await projections.apply_subscription(uow, subscription_row(event.subscription))


async def on_canceled(
    uow: UnitOfWork, event: sub_events.SubscriptionCanceledEvent, envelope: EventEnvelope
) -> None:
    ended_at = timestamp_or_none(event, "effective_time")
    await projections.apply_subscription(
        uow, subscription_row(event.subscription, ended_at=ended_at)
    )


async def on_period_closed(
    uow: UnitOfWork, event: sub_events.SubscriptionPeriodClosedEvent, envelope: EventEnvelope
) -> None:
    period = event.period
    start = timestamp_or_none(period, "period_start_time")
    end = timestamp_or_none(period, "period_end_time")
    if start is None or end is None:
        raise ValueError(f"period_closed of {event.subscription_id} lacks period bounds")
    await projections.close_period(
        uow,
        projections.PeriodClosed(
            subscription_id=event.subscription_id,
            org_id=event.org_id,
            period_start=start,
            period_end=end,
            close_time=timestamp_or_none(period, "close_time") or datetime.now(UTC),
            next_period_start=None
            if event.subscription_ended
            else timestamp_or_none(event, "next_period_start_time"),
            next_period_end=None
            if event.subscription_ended
            else timestamp_or_none(event, "next_period_end_time"),
        ),
    )


def subscriptions(ctx: ServiceContext) -> Sequence[Subscription[Any]]:
    s = ctx.settings
    options: dict[str, Any] = {
        "max_deliver": s.consumer_max_deliver,
        "backoff_seconds": s.consumer_backoff_seconds,
        "batch_size": s.consumer_batch_size,
    }
    return [
        Subscription(
            durable="catalog",
            handlers={
                catalog_events.PackagePublishedEvent: on_package_published,
                catalog_events.MetricCreatedEvent: on_metric,
                catalog_events.MetricUpdatedEvent: on_metric,
                catalog_events.MetricArchivedEvent: on_metric,
            },
            **options,
        ),
        Subscription(
            durable="subscriptions",
            handlers={
                sub_events.SubscriptionCreatedEvent: on_subscription,
                sub_events.SubscriptionChangedEvent: on_subscription,
                sub_events.SubscriptionPausedEvent: on_subscription,
                sub_events.SubscriptionResumedEvent: on_subscription,
                sub_events.SubscriptionTrialEndedEvent: on_subscription,
                sub_events.SubscriptionRenewedEvent: on_subscription,
                sub_events.SubscriptionCanceledEvent: on_canceled,
                sub_events.SubscriptionPeriodClosedEvent: on_period_closed,
            },
            # Every handler here touches one subscription's rows only, so
            # different subscriptions (the aggregate id) may run at once.
            concurrency=s.consumer_concurrency,
            messages_per_transaction=s.consumer_messages_per_transaction,
            **options,
        ),
    ]
