"""The producers' streams -> one pending delivery per (event, endpoint).

One durable consumer per producer stream (a durable lives on one stream),
each applying only the event types an endpoint may select. The kit writes the
inbox row in the handler's transaction, so a redelivered event adds nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message
from tally.events.v1 import invoicing_events_pb2 as ie
from tally.events.v1 import payments_events_pb2 as pe
from tally.events.v1 import subscriptions_events_pb2 as se
from tally.events.v1 import usage_events_pb2 as ue

from services.kit.clock import Clock, SystemClock
from services.kit.consumer import Handler, Subscription
from services.kit.events import EventEnvelope
from services.payments.outbound import handlers as h
from services.payments.outbound.dispatcher import WebhookDispatcher
from services.payments.repository import PaymentsUnitOfWork

PRODUCERS = ("invoicing", "payments", "subscriptions", "usage")


EVENTS: dict[str, tuple[type[Message], ...]] = {
    "invoicing": (ie.InvoiceFinalizedEvent, ie.InvoicePaidEvent, ie.InvoiceVoidedEvent),
    "payments": (pe.PaymentSucceededEvent, pe.PaymentFailedEvent, pe.PaymentRefundedEvent),
    "subscriptions": (
        se.SubscriptionCreatedEvent,
        se.SubscriptionChangedEvent,
        se.SubscriptionCanceledEvent,
        se.SubscriptionPausedEvent,
        se.SubscriptionResumedEvent,
        se.SubscriptionTrialEndedEvent,
        se.SubscriptionRenewedEvent,
        se.SubscriptionPeriodClosedEvent,
    ),
    "usage": (ue.UsageThresholdCrossedEvent, ue.UsageEventRejectedEvent),
}


def subscriptions(
    dispatcher: WebhookDispatcher, clock: Clock | None = None, *, messages_per_transaction: int = 1
) -> Sequence[Subscription[Any]]:
    """``messages_per_transaction``: safe because the handler only writes
    delivery rows; the sending happens in the dispatcher, woken after the commit."""
    the_clock: Clock = clock or SystemClock()

    async def on_event(uow: PaymentsUnitOfWork, event: Message, envelope: EventEnvelope) -> None:
        if await h.record_deliveries(uow, envelope, event, the_clock.now()):
            uow.after_commit(dispatcher.wake)

    handler: Handler[PaymentsUnitOfWork] = on_event
    return [
        Subscription[PaymentsUnitOfWork](
            durable=f"webhooks-{producer}",
            handlers=dict.fromkeys(EVENTS[producer], handler),
            messages_per_transaction=messages_per_transaction,
        )
        for producer in PRODUCERS
    ]
