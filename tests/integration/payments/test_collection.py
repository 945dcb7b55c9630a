"""Collecting finalized invoices through the Stripe emulator: paid by webhook,
no payment method, dunning to the final failure and back, idempotent attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from tally.events.v1 import payments_events_pb2 as ev
from tally.payments.v1 import payments_pb2 as api
from tally.payments.v1 import resources_pb2 as pb

from tests.support.metrics import scrape, value
from tests.support.payments import Harness, new_id, running_payments, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def payments(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_payments(database_url, nats_url) as harness:
        yield harness


async def test_finalized_invoice_is_paid_by_webhook(payments: Harness) -> None:
    org = new_id("org")
    await payments.add_card(org)
    payments.emu.processing_delay = 0.3
    try:
        invoice = await payments.finalize_invoice(org, 4900)
        # The charge answers "processing": only the webhook can settle it.
        processing = await payments.wait_payment(invoice, pb.PAYMENT_STATE_PROCESSING)
        await wait_for(lambda: _has_intent(payments, invoice), timeout=5)
        paid = await payments.wait_payment(invoice, pb.PAYMENT_STATE_SUCCEEDED)
    finally:
        payments.emu.processing_delay = None
    assert processing.state == pb.PAYMENT_STATE_PROCESSING
    assert paid.amount.amount_minor == 4900
    assert paid.attempt_count == 1
    (event,) = await payments.wait_events("payment.succeeded", invoice, 1)
    assert isinstance(event, ev.PaymentSucceededEvent)
    assert event.amount.amount_minor == 4900
    assert event.provider_payment_intent_id == paid.provider_payment_intent_id
    succeeded = [e for e in payments.emu.events if e["type"] == "payment_intent.succeeded"]
    pi_event = next(
        e for e in succeeded if e["data"]["object"]["id"] == paid.provider_payment_intent_id
    )
    await payments.emu.wait_for_deliveries()
    assert (pi_event["id"], 200) in payments.emu.deliveries


async def test_no_payment_method_waits_with_action_required(payments: Harness) -> None:
    org = new_id("org")
    invoice = await payments.finalize_invoice(org, 1500)
    waiting = await payments.wait_payment(invoice, pb.PAYMENT_STATE_REQUIRES_ACTION)
    assert waiting.attempt_count == 0
    (event,) = await payments.wait_events("payment.action_required", invoice, 1)
    assert isinstance(event, ev.PaymentActionRequiredEvent)
    assert event.reason == pb.ACTION_REQUIRED_REASON_NO_PAYMENT_METHOD
    # A default method makes the waiting invoice collectable at once.
    await payments.add_card(org)
    paid = await payments.wait_payment(invoice, pb.PAYMENT_STATE_SUCCEEDED)
    assert paid.attempt_count == 1


async def test_zero_amount_invoice_makes_no_payment(payments: Harness) -> None:
    org = new_id("org")
    await payments.add_card(org)
    invoice = await payments.finalize_invoice(org, 0)
    marker = await payments.finalize_invoice(org, 100)
    await payments.wait_payment(marker, pb.PAYMENT_STATE_SUCCEEDED)
    assert await payments.payment_of(invoice) is None


async def test_declined_card_walks_dunning_to_final_failure_then_recovers(
    payments: Harness,
) -> None:
    assert payments.runtime.http is not None
    metrics_url = f"http://127.0.0.1:{payments.runtime.http.port}"
    before = await scrape(metrics_url)
    org = new_id("org")
    await payments.add_card(org, "pm_card_chargeDeclined")
    invoice = await payments.finalize_invoice(org, 2500)
    payment = await payments.wait_payment(invoice, pb.PAYMENT_STATE_RETRY_SCHEDULED)
    payment, waits = await payments.walk_dunning(payment)
    assert waits == [1, 3, 5]
    assert payment.state == pb.PAYMENT_STATE_FAILED
    assert not payment.HasField("next_retry_time")
    assert payment.failure_code == "card_declined"
    failed = await payments.wait_events("payment.failed", invoice, 4)
    assert [(e.attempt_number, e.final_attempt) for e in failed] == [  # type: ignore[attr-defined]
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    attempts = await payments.attempts(payment.payment_id)
    assert [a.trigger for a in attempts] == [
        pb.ATTEMPT_TRIGGER_INVOICE_FINALIZED,
        pb.ATTEMPT_TRIGGER_DUNNING_RETRY,
        pb.ATTEMPT_TRIGGER_DUNNING_RETRY,
        pb.ATTEMPT_TRIGGER_DUNNING_RETRY,
    ]
    assert attempts[-1].final_attempt

    # A new card and "retry payment" bring it back.
    await payments.add_card(org, "pm_card_mastercard")
    reply = await payments.stub.PayInvoice(
        api.PayInvoiceRequest(invoice_id=invoice, org_id=org, request_id=new_id("req")), timeout=10
    )
    assert reply.attempt.attempt_number == 5
    assert reply.attempt.trigger == pb.ATTEMPT_TRIGGER_ON_DEMAND
    assert reply.attempt.state == pb.ATTEMPT_STATE_SUCCEEDED
    assert reply.payment.state == pb.PAYMENT_STATE_SUCCEEDED
    (ok,) = await payments.wait_events("payment.succeeded", invoice, 1)
    assert ok.attempt_number == 5  # type: ignore[attr-defined]

    # billing.payment.attempts{outcome} on /metrics counted each attempt once.
    after = await scrape(metrics_url)

    def moved(outcome: str) -> float:
        name = "billing_payment_attempts_total"
        return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)

    assert (moved("failed"), moved("succeeded")) == (4, 1)


async def test_retried_attempt_with_same_key_charges_once(payments: Harness) -> None:
    org = new_id("org")
    await payments.add_card(org)
    invoice = await payments.finalize_invoice(org, 3300)
    paid = await payments.wait_payment(invoice, pb.PAYMENT_STATE_SUCCEEDED)
    (attempt,) = await payments.attempts(paid.payment_id)
    key = attempt.idempotency_key
    assert key == f"tally:invoice:{invoice}:attempt:1"
    # The first charge's webhook must be applied before the crash is staged,
    # or it lands afterwards, settles the staged attempt and nothing is left
    # to resend.
    await payments.emu.wait_for_deliveries()
    # A crash after the provider call but before transaction 2 leaves the
    # attempt undispatched: the dispatcher sends it again with the same key.
    from sqlalchemy import update

    from services.payments.repository import payment_attempt_table

    assert payments.runtime.context is not None
    async with payments.runtime.context.database.session() as session, session.begin():
        await session.execute(
            update(payment_attempt_table)
            .where(payment_attempt_table.c.attempt_id == attempt.attempt_id)
            # Still leased to the crashed sender: the dispatcher job keeps off.
            .values(
                dispatched=False,
                state="PROCESSING",
                lease_until=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    resent = await payments.collector.dispatch(attempt.attempt_id)
    assert [a.state.value for a in resent] == ["SUCCEEDED"]
    assert resent[0].provider_payment_intent_id == attempt.provider_payment_intent_id
    assert len(payments.charges_for(key)) == 2  # two requests ...
    intents = {
        e["data"]["object"]["id"]
        for e in payments.emu.events
        if e["type"] == "payment_intent.succeeded"
        and e["data"]["object"]["metadata"].get("tally_invoice_id") == invoice
    }
    assert intents == {attempt.provider_payment_intent_id}  # ... one charge
    assert len(await payments.events("payment.succeeded", invoice)) == 1


async def test_attempt_older_than_its_key_is_looked_up_not_charged_again(
    payments: Harness,
) -> None:
    """Stripe forgets idempotency keys after 24 hours: an attempt stuck that
    long must find the charge it already made instead of making another."""
    from sqlalchemy import update

    from services.payments.repository import payment_attempt_table

    org = new_id("org")
    await payments.add_card(org)
    invoice = await payments.finalize_invoice(org, 4100)
    paid = await payments.wait_payment(invoice, pb.PAYMENT_STATE_SUCCEEDED)
    (attempt,) = await payments.attempts(paid.payment_id)
    await payments.emu.wait_for_deliveries()
    assert payments.runtime.context is not None
    async with payments.runtime.context.database.session() as session, session.begin():
        await session.execute(
            update(payment_attempt_table)
            .where(payment_attempt_table.c.attempt_id == attempt.attempt_id)
            .values(
                dispatched=False,
                state="PROCESSING",
                create_time=datetime.now(UTC) - timedelta(hours=25),
                lease_until=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    payments.emu.expire_idempotency_keys()
    resent = await payments.collector.dispatch(attempt.attempt_id)
    assert [a.state.value for a in resent] == ["SUCCEEDED"]
    assert resent[0].provider_payment_intent_id == attempt.provider_payment_intent_id
    assert len(payments.charges_for(attempt.idempotency_key)) == 1  # never sent again
    searches = [r for r in payments.emu.requests if r[1] == "/v1/payment_intents/search"]
    assert len(searches) == 1
    assert len(await payments.events("payment.succeeded", invoice)) == 1
    # An attempt the provider never saw is still sent.
    provider = payments.collector.provider
    assert await provider.find_charge({"tally_attempt_id": new_id("att")}) is None


async def _has_intent(payments: Harness, invoice: str) -> bool:
    found = await payments.payment_of(invoice)
    return found is not None and found.provider_payment_intent_id.startswith("pi_")


async def test_voided_invoice_stops_dunning(payments: Harness) -> None:
    from tally.events.v1 import invoicing_events_pb2

    org = new_id("org")
    await payments.add_card(org, "pm_card_chargeDeclined")
    invoice = await payments.finalize_invoice(org, 990)
    payment = await payments.wait_payment(invoice, pb.PAYMENT_STATE_RETRY_SCHEDULED)
    due = payment.next_retry_time.ToDatetime(tzinfo=UTC)
    await payments.publish(
        invoicing_events_pb2.InvoiceVoidedEvent(invoice_id=invoice, org_id=org), invoice
    )
    canceled = await payments.wait_payment(invoice, pb.PAYMENT_STATE_CANCELED)
    assert not canceled.HasField("next_retry_time")
    assert await payments.collector.dunning(now=due + timedelta(days=30)) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.stub.PayInvoice(api.PayInvoiceRequest(invoice_id=invoice), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(await payments.attempts(payment.payment_id)) == 1


async def test_card_confirmed_in_the_browser_arrives_by_webhook(payments: Harness) -> None:
    """The portal flow: SetupIntent, confirmed by Stripe.js (here: the SDK),
    setup_intent.succeeded records the card as the default and the invoice
    that waited for a method is collected."""
    import stripe

    from devtools.stripe_emulator import DEFAULT_API_KEY

    org = new_id("org")
    invoice = await payments.finalize_invoice(org, 1700)
    await payments.wait_payment(invoice, pb.PAYMENT_STATE_REQUIRES_ACTION)
    intent = await payments.stub.CreateSetupIntent(
        api.CreateSetupIntentRequest(org_id=org), timeout=10
    )
    browser = stripe.StripeClient(
        DEFAULT_API_KEY,
        base_addresses={"api": payments.emu.base_url},
        http_client=stripe.HTTPXClient(),
    )
    await browser.v1.setup_intents.confirm_async(
        intent.setup_intent_id, {"payment_method": "pm_card_visa"}
    )
    paid = await payments.wait_payment(invoice, pb.PAYMENT_STATE_SUCCEEDED)
    assert paid.attempt_count == 1
    methods = await payments.stub.ListPaymentMethods(
        api.ListPaymentMethodsRequest(org_id=org), timeout=5
    )
    (method,) = methods.payment_methods
    assert (method.is_default, method.card.brand, method.card.last4) == (True, "visa", "4242")
    # The portal then attaches the same method: it is the one already recorded.
    attached = await payments.stub.AttachPaymentMethod(
        api.AttachPaymentMethodRequest(
            org_id=org, provider_payment_method_id=method.provider_payment_method_id
        ),
        timeout=10,
    )
    assert attached.payment_method.payment_method_id == method.payment_method_id
