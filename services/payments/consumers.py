"""Events payments applies: invoicing's finalized (start collecting), paid,
voided and marked_uncollectible (stop). The kit consumer writes the inbox row
in the handler's transaction; the unique payment per invoice is the second guard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tally.events.v1 import invoicing_events_pb2 as ie

from services.kit.clock import Clock, SystemClock
from services.kit.consumer import Subscription
from services.kit.events import EventEnvelope
from services.payments import handlers as h
from services.payments.dispatch import Collector
from services.payments.repository import PaymentsUnitOfWork


def finalized_invoice(event: ie.InvoiceFinalizedEvent) -> h.FinalizedInvoice:
    inv = event.invoice
    return h.FinalizedInvoice(
        invoice_id=inv.invoice_id,
        org_id=inv.org_id,
        subscription_id=inv.subscription_id,
        number=inv.number,
        currency_code=inv.amount_due.currency_code or inv.currency_code,
        amount_due_minor=inv.amount_due.amount_minor,
        description=event.payment_description,
    )


def subscriptions(
    collector: Collector, clock: Clock | None = None, *, messages_per_transaction: int = 1
) -> Sequence[Subscription[Any]]:
    """``messages_per_transaction``: invoice events applied in one transaction.
    Safe because these handlers only write; the charge happens in the
    collector, woken after the commit."""
    the_clock: Clock = clock or SystemClock()

    async def on_finalized(
        uow: PaymentsUnitOfWork, event: ie.InvoiceFinalizedEvent, _: EventEnvelope
    ) -> None:
        attempt = await h.invoice_finalized(
            uow, finalized_invoice(event), the_clock.now(), collector.policy
        )
        if attempt is not None:
            uow.after_commit(collector.wake)

    async def on_paid(
        uow: PaymentsUnitOfWork, event: ie.InvoicePaidEvent, _: EventEnvelope
    ) -> None:
        await h.invoice_closed(
            uow, event.invoice_id, h.INVOICE_PAID, event.payment_id, the_clock.now()
        )

    async def on_voided(
        uow: PaymentsUnitOfWork, event: ie.InvoiceVoidedEvent, _: EventEnvelope
    ) -> None:
        await h.invoice_closed(uow, event.invoice_id, h.INVOICE_VOID, "", the_clock.now())

    async def on_uncollectible(
        uow: PaymentsUnitOfWork, event: ie.InvoiceMarkedUncollectibleEvent, _: EventEnvelope
    ) -> None:
        await h.invoice_closed(uow, event.invoice_id, h.INVOICE_UNCOLLECTIBLE, "", the_clock.now())

    return [
        Subscription[PaymentsUnitOfWork](
            durable="invoices",
            handlers={
                ie.InvoiceFinalizedEvent: on_finalized,
                ie.InvoicePaidEvent: on_paid,
                ie.InvoiceVoidedEvent: on_voided,
                ie.InvoiceMarkedUncollectibleEvent: on_uncollectible,
            },
            messages_per_transaction=messages_per_transaction,
        )
    ]
