"""Events this service applies: catalog publications (its local copy of the
plans), usage aggregates (entitlements) and payment outcomes (past_due)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import catalog_events_pb2, payments_events_pb2, usage_events_pb2

from services.kit.clock import Clock, SystemClock
from services.kit.consumer import Subscription
from services.kit.events import EventEnvelope
from services.kit.protoconv import from_timestamp
from services.subscriptions import domain as d
from services.subscriptions import handlers as h
from services.subscriptions.protomap import INTERVAL_FROM_PB
from services.subscriptions.repository import SubscriptionsUnitOfWork

_TIMING = {
    catalog_pb2.BASE_FEE_TIMING_IN_ADVANCE: "in_advance",
    catalog_pb2.BASE_FEE_TIMING_IN_ARREARS: "in_arrears",
}


def _decimal(text: str, default: Decimal | None = None) -> Decimal | None:
    try:
        return Decimal(text) if text else default
    except InvalidOperation:
        return default


def version_command(version: catalog_pb2.PackageVersion) -> h.RecordPackageVersion:
    """A published version as the projection keeps it.

    The catalog validated it before publishing; anything this side cannot
    read (an unknown interval) raises, so the message is retried and parked
    instead of being half-applied.
    """
    if version.billing_interval not in INTERVAL_FROM_PB:
        raise ValueError(f"version {version.package_version_id}: unknown billing interval")
    plan = d.Plan(
        package_version_id=version.package_version_id,
        package_id=version.package_id,
        package_code=version.package_code,
        version=version.version,
        currency_code=version.currency_code,
        interval=INTERVAL_FROM_PB[version.billing_interval],
        base_fee=_decimal(version.base_fee_amount, Decimal(0)) or Decimal(0),
        trial_days=version.trial_days,
    )
    limits = tuple(
        d.FeatureLimit(
            feature_key=lim.feature_key,
            unlimited=lim.unlimited,
            limit=None if lim.unlimited else _decimal(lim.limit, Decimal(0)),
            # Unspecified enforcement is treated as hard: deny is the safe default.
            hard=lim.enforcement != catalog_pb2.LIMIT_ENFORCEMENT_SOFT,
            resets_each_period=lim.resets_each_period,
            metric_code=lim.metric_code,
        )
        for lim in version.feature_limits
    )
    return h.RecordPackageVersion(
        plan=plan,
        name=version.name,
        base_fee_timing=_TIMING.get(version.base_fee_timing, "in_advance"),
        metric_codes=tuple(c.metric_code for c in version.charges),
        limits=limits,
        publish_time=from_timestamp(version.publish_time, present=version.HasField("publish_time")),
    )


async def on_package_published(
    uow: SubscriptionsUnitOfWork,
    event: catalog_events_pb2.PackagePublishedEvent,
    envelope: EventEnvelope,
) -> None:
    await h.record_package_version(uow, version_command(event.package_version))


async def on_package_archived(
    uow: SubscriptionsUnitOfWork,
    event: catalog_events_pb2.PackageArchivedEvent,
    envelope: EventEnvelope,
) -> None:
    await h.archive_package(uow, h.ArchivePackage(event.package_id, event.package_code))


async def on_usage_aggregated(
    uow: SubscriptionsUnitOfWork,
    event: usage_events_pb2.UsageAggregatedEvent,
    envelope: EventEnvelope,
) -> None:
    agg = event.aggregate
    value = _decimal(agg.value)
    start = from_timestamp(agg.period_start_time, present=agg.HasField("period_start_time"))
    end = from_timestamp(agg.period_end_time, present=agg.HasField("period_end_time"))
    if value is None or start is None or end is None or not agg.subscription_id:
        raise ValueError(f"usage.aggregated {envelope.event_id} lacks its aggregate")
    await h.record_usage(
        uow,
        h.RecordUsage(
            subscription_id=agg.subscription_id,
            org_id=agg.org_id,
            metric_code=agg.metric_code,
            period_start=start,
            period_end=end,
            value=value,
            revision=event.revision,
        ),
    )


def subscriptions(
    clock: Clock | None = None, *, messages_per_transaction: int = 1
) -> Sequence[Subscription[Any]]:
    """``messages_per_transaction``: usage aggregates applied in one
    transaction; their handler only writes the projection."""
    the_clock: Clock = clock or SystemClock()

    async def on_payment_failed(
        uow: SubscriptionsUnitOfWork,
        event: payments_events_pb2.PaymentFailedEvent,
        envelope: EventEnvelope,
    ) -> None:
        cmd = h.PaymentOutcome(event.subscription_id, False, event.final_attempt)
        await h.apply_payment(uow, cmd, the_clock)

    async def on_payment_succeeded(
        uow: SubscriptionsUnitOfWork,
        event: payments_events_pb2.PaymentSucceededEvent,
        envelope: EventEnvelope,
    ) -> None:
        await h.apply_payment(uow, h.PaymentOutcome(event.subscription_id, True), the_clock)

    return [
        Subscription[SubscriptionsUnitOfWork](
            durable="catalog-projection",
            handlers={
                catalog_events_pb2.PackagePublishedEvent: on_package_published,
                catalog_events_pb2.PackageArchivedEvent: on_package_archived,
            },
        ),
        Subscription[SubscriptionsUnitOfWork](
            durable="usage-projection",
            handlers={usage_events_pb2.UsageAggregatedEvent: on_usage_aggregated},
            messages_per_transaction=messages_per_transaction,
        ),
        Subscription[SubscriptionsUnitOfWork](
            durable="payment-outcomes",
            handlers={
                payments_events_pb2.PaymentFailedEvent: on_payment_failed,
                payments_events_pb2.PaymentSucceededEvent: on_payment_succeeded,
            },
        ),
    ]
