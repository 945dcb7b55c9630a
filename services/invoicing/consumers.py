"""Events invoicing applies: catalog versions and subscriptions (projections),
period closes (invoices) and payment outcomes. The kit consumer writes the
inbox row in the handler's transaction, so a redelivery applies nothing twice;
the unique (subscription, period) index is the second guard."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from tally.events.v1 import catalog_events_pb2, payments_events_pb2, subscriptions_events_pb2
from tally.subscriptions.v1 import resources_pb2 as subs_pb2

from services.invoicing import domain as d
from services.invoicing import handlers as h
from services.invoicing import protomap
from services.invoicing.handlers.common import BatchUsageSource
from services.invoicing.handlers.prefetch import UsageRead, prefetch_usage
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.settings import Policy
from services.kit.clock import Clock, SystemClock
from services.kit.consumer import Subscription
from services.kit.events import EventEnvelope
from services.kit.protoconv import from_timestamp

SE = subscriptions_events_pb2


def period_start(event: SE.SubscriptionPeriodClosedEvent) -> datetime | None:
    p = event.period
    return from_timestamp(p.period_start_time, present=p.HasField("period_start_time"))


def closed_period(event: SE.SubscriptionPeriodClosedEvent) -> d.ClosedPeriod:
    p = event.period
    start = period_start(event)
    end = from_timestamp(p.period_end_time, present=p.HasField("period_end_time"))
    if start is None or end is None:
        raise ValueError(f"period_closed of {event.subscription_id} lacks its bounds")
    return d.ClosedPeriod(
        period_start=start,
        period_end=end,
        segments=protomap.segments_of(p),
        ended=event.subscription_ended,
        next_start=from_timestamp(
            event.next_period_start_time, present=event.HasField("next_period_start_time")
        ),
        next_end=from_timestamp(
            event.next_period_end_time, present=event.HasField("next_period_end_time")
        ),
        next_version_id=event.next_package_version_id,
        next_kind=protomap.SEGMENT_KINDS.get(event.next_period_kind, d.SegmentKind.ACTIVE),
    )


def subscriptions(
    usage: h.UsageSource,
    policy: Policy,
    clock: Clock | None = None,
    *,
    concurrency: int = 1,
    messages_per_transaction: int = 1,
) -> Sequence[Subscription[Any]]:
    """``concurrency``: subscriptions whose events apply at once. Their handlers
    write one subscription's rows; what an org shares (the invoice counter, the
    credit balance) is locked in one order, counter then balance, and held to
    commit, so numbers stay gapless when an org's periods close together.
    ``messages_per_transaction``: subscription events applied in one
    transaction; every effect of these handlers lives in the unit of work."""
    the_clock: Clock = clock or SystemClock()
    # Each group's prefetched usage, by its unit of work: it lives and dies
    # with that transaction, so nothing read for one group serves another (a
    # group applied again one by one reads usage again).
    prefetched: WeakKeyDictionary[InvoicingUnitOfWork, h.UsageSource] = WeakKeyDictionary()

    batch_source = usage if isinstance(usage, BatchUsageSource) else None

    async def prepare_group(
        uow: InvoicingUnitOfWork, events: Sequence[tuple[Any, EventEnvelope]]
    ) -> None:
        assert batch_source is not None  # only given to the kit with one
        reads = [
            UsageRead(e.subscription_id, e.org_id, e.package_version_id, start)
            for e, _ in events
            if isinstance(e, SE.SubscriptionPeriodClosedEvent)
            for start in (period_start(e),)
            if start is not None
        ]
        if reads:
            prefetched[uow] = await prefetch_usage(uow, batch_source, reads)

    async def on_published(
        uow: InvoicingUnitOfWork, event: catalog_events_pb2.PackagePublishedEvent, _: EventEnvelope
    ) -> None:
        await h.record_package_version(uow, event.package_version)

    async def on_subscription(uow: InvoicingUnitOfWork, event: Any, _: EventEnvelope) -> None:
        sub: subs_pb2.Subscription = event.subscription
        if sub.subscription_id:
            await h.record_subscription(uow, protomap.subscription_row(sub))

    async def on_changed(
        uow: InvoicingUnitOfWork, event: SE.SubscriptionChangedEvent, _: EventEnvelope
    ) -> None:
        sub = event.subscription
        await h.record_subscription(uow, protomap.subscription_row(sub))
        if event.timing != subs_pb2.PLAN_CHANGE_TIMING_IMMEDIATE:
            return
        start = from_timestamp(
            sub.current_period_start_time, present=sub.HasField("current_period_start_time")
        )
        end = from_timestamp(
            sub.current_period_end_time, present=sub.HasField("current_period_end_time")
        )
        at = from_timestamp(event.effective_time, present=event.HasField("effective_time"))
        if start is None or end is None or at is None:
            raise ValueError(f"subscription.changed {event.subscription_id} lacks its period")
        await h.change_plan_now(
            uow,
            policy,
            h.ImmediateChange(
                subscription_id=event.subscription_id,
                org_id=event.org_id,
                currency=sub.currency_code,
                previous_version_id=event.previous_package_version_id,
                version_id=event.package_version_id,
                effective_time=at,
                period_start=start,
                period_end=end,
                trial_end=from_timestamp(
                    sub.trial_end_time, present=sub.HasField("trial_end_time")
                ),
            ),
            the_clock.now(),
        )

    async def on_period_closed(
        uow: InvoicingUnitOfWork, event: SE.SubscriptionPeriodClosedEvent, _: EventEnvelope
    ) -> None:
        await h.close_period(
            uow,
            prefetched.get(uow, usage),
            policy,
            subscription_id=event.subscription_id,
            org_id=event.org_id,
            currency=event.currency_code,
            period=closed_period(event),
            usage_version_id=event.package_version_id,
            now=the_clock.now(),
        )

    async def on_succeeded(
        uow: InvoicingUnitOfWork, event: payments_events_pb2.PaymentSucceededEvent, _: EventEnvelope
    ) -> None:
        await h.payment_succeeded(
            uow, event.invoice_id, event.amount.amount_minor, event.payment_id, the_clock.now()
        )

    async def on_failed(
        uow: InvoicingUnitOfWork, event: payments_events_pb2.PaymentFailedEvent, _: EventEnvelope
    ) -> None:
        await h.payment_failed(uow, event.invoice_id, event.failure_code, the_clock.now())

    async def on_refunded(
        uow: InvoicingUnitOfWork, event: payments_events_pb2.PaymentRefundedEvent, _: EventEnvelope
    ) -> None:
        await h.payment_refunded(
            uow, event.invoice_id, event.amount.amount_minor, event.credit_memo_id, the_clock.now()
        )

    return [
        Subscription[InvoicingUnitOfWork](
            durable="catalog-projection",
            handlers={catalog_events_pb2.PackagePublishedEvent: on_published},
        ),
        Subscription[InvoicingUnitOfWork](
            durable="subscriptions",
            handlers={
                SE.SubscriptionCreatedEvent: on_subscription,
                SE.SubscriptionChangedEvent: on_changed,
                SE.SubscriptionCanceledEvent: on_subscription,
                SE.SubscriptionPausedEvent: on_subscription,
                SE.SubscriptionResumedEvent: on_subscription,
                SE.SubscriptionTrialEndedEvent: on_subscription,
                SE.SubscriptionRenewedEvent: on_subscription,
                SE.SubscriptionPeriodClosedEvent: on_period_closed,
            },
            concurrency=concurrency,
            messages_per_transaction=messages_per_transaction,
            prepare_group=prepare_group if batch_source is not None else None,
        ),
        Subscription[InvoicingUnitOfWork](
            durable="payment-outcomes",
            handlers={
                payments_events_pb2.PaymentSucceededEvent: on_succeeded,
                payments_events_pb2.PaymentFailedEvent: on_failed,
                payments_events_pb2.PaymentRefundedEvent: on_refunded,
            },
        ),
    ]
