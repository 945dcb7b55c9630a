"""Refunds (partial, then the rest, never more), payment sync repairing a
dropped webhook, and the API's validation and org scoping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tally.payments.v1 import payments_pb2 as api
from tally.payments.v1 import resources_pb2 as pb
from tally.type.v1 import money_pb2

from services.kit.protoconv import to_timestamp
from tests.support.payments import Harness, new_id, running_payments, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def payments(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_payments(database_url, nats_url) as harness:
        yield harness


async def _paid(payments: Harness, amount: int) -> tuple[str, str, pb.Payment]:
    org = new_id("org")
    await payments.add_card(org)
    invoice = await payments.finalize_invoice(org, amount)
    return org, invoice, await payments.wait_payment(invoice, pb.PAYMENT_STATE_SUCCEEDED)


def _violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def test_partial_then_full_refund_and_never_more(payments: Harness) -> None:
    org, invoice, paid = await _paid(payments, 5000)
    first = await payments.stub.RefundPayment(
        api.RefundPaymentRequest(
            payment_id=paid.payment_id,
            amount=money_pb2.Money(amount_minor=1500, currency_code="USD"),
            reason="goodwill",
            request_id=new_id("req"),
        ),
        timeout=10,
    )
    assert first.refund.state == pb.REFUND_STATE_SUCCEEDED
    assert first.refund.provider_refund_id.startswith("re_")
    assert first.payment.amount_refunded.amount_minor == 1500

    with pytest.raises(grpc.aio.AioRpcError) as over:
        await payments.stub.RefundPayment(
            api.RefundPaymentRequest(
                payment_id=paid.payment_id,
                amount=money_pb2.Money(amount_minor=3501, currency_code="USD"),
            ),
            timeout=10,
        )
    assert over.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "3500" in (over.value.details() or "")

    rest = await payments.stub.RefundPayment(
        api.RefundPaymentRequest(payment_id=paid.payment_id, org_id=org), timeout=10
    )
    assert rest.refund.amount.amount_minor == 3500
    assert rest.payment.amount_refunded.amount_minor == 5000
    assert rest.payment.state == pb.PAYMENT_STATE_SUCCEEDED

    with pytest.raises(grpc.aio.AioRpcError) as nothing_left:
        await payments.stub.RefundPayment(
            api.RefundPaymentRequest(payment_id=paid.payment_id), timeout=10
        )
    assert nothing_left.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    refunded = await payments.wait_events("payment.refunded", invoice, 2)
    assert [
        (e.amount.amount_minor, e.total_refunded.amount_minor)  # type: ignore[attr-defined]
        for e in refunded
    ] == [(1500, 1500), (3500, 5000)]
    listed = await payments.stub.ListRefunds(
        api.ListRefundsRequest(payment_id=paid.payment_id), timeout=5
    )
    assert [r.amount.amount_minor for r in listed.refunds] == [3500, 1500]
    # charge.refunded webhooks arrive after the RPC recorded each refund: no second event.
    await payments.emu.wait_for_deliveries()
    assert len(await payments.events("payment.refunded", invoice)) == 2


async def test_retried_refund_request_refunds_once(payments: Harness) -> None:
    _, invoice, paid = await _paid(payments, 900)
    request = api.RefundPaymentRequest(
        payment_id=paid.payment_id,
        amount=money_pb2.Money(amount_minor=400, currency_code="USD"),
        request_id=new_id("req"),
    )
    one = await payments.stub.RefundPayment(request, timeout=10)
    two = await payments.stub.RefundPayment(request, timeout=10)
    assert one.refund.refund_id == two.refund.refund_id
    got = await payments.stub.GetPayment(
        api.GetPaymentRequest(payment_id=paid.payment_id), timeout=5
    )
    assert got.payment.amount_refunded.amount_minor == 400
    assert len(await payments.events("payment.refunded", invoice)) == 1


async def test_sync_repairs_an_invoice_whose_webhook_was_dropped(payments: Harness) -> None:
    org = new_id("org")
    await payments.add_card(org)
    since = datetime.now(UTC) - timedelta(seconds=5)
    payments.emu.deliver_webhooks = False
    payments.emu.processing_delay = 0.2
    try:
        invoice = await payments.finalize_invoice(org, 2100)
        stuck = await payments.wait_payment(invoice, pb.PAYMENT_STATE_PROCESSING)

        async def settled_at_provider() -> bool:
            return any(
                e["type"] == "payment_intent.succeeded"
                and e["data"]["object"]["metadata"].get("tally_invoice_id") == invoice
                for e in payments.emu.events
            )

        await wait_for(settled_at_provider)
    finally:
        payments.emu.deliver_webhooks = True
        payments.emu.processing_delay = None
    still = await payments.payment_of(invoice)
    assert still is not None and still.state == pb.PAYMENT_STATE_PROCESSING
    assert await payments.events("payment.succeeded", invoice) == []

    reply = await payments.stub.SyncPayments(
        api.SyncPaymentsRequest(since_time=to_timestamp(since)), timeout=30
    )
    assert stuck.payment_id in reply.updated_payment_ids
    assert reply.checked_count >= 1
    repaired = await payments.payment_of(invoice)
    assert repaired is not None and repaired.state == pb.PAYMENT_STATE_SUCCEEDED
    (event,) = await payments.wait_events("payment.succeeded", invoice, 1)
    assert event.payment_id == stuck.payment_id  # type: ignore[attr-defined]
    # A second sync from the stored cursor finds nothing left to change.
    again = await payments.stub.SyncPayments(api.SyncPaymentsRequest(), timeout=30)
    assert stuck.payment_id not in again.updated_payment_ids
    assert len(await payments.events("payment.succeeded", invoice)) == 1


async def test_validation_collects_every_field(payments: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.stub.AttachPaymentMethod(api.AttachPaymentMethodRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(_violations(caught.value)) == {"org_id", "provider_payment_method_id"}
    with pytest.raises(grpc.aio.AioRpcError) as refund:
        await payments.stub.RefundPayment(
            api.RefundPaymentRequest(amount=money_pb2.Money(amount_minor=-5, currency_code="XXQ")),
            timeout=5,
        )
    assert set(_violations(refund.value)) == {
        "payment_id",
        "amount.amount_minor",
        "amount.currency_code",
    }


async def test_another_orgs_resources_are_not_found(payments: Harness) -> None:
    org, invoice, paid = await _paid(payments, 600)
    other = new_id("org")
    methods = await payments.stub.ListPaymentMethods(
        api.ListPaymentMethodsRequest(org_id=org), timeout=5
    )
    (method,) = methods.payment_methods
    assert method.is_default and method.card.last4 == "4242"
    calls = [
        payments.stub.GetPayment(
            api.GetPaymentRequest(payment_id=paid.payment_id, org_id=other), timeout=5
        ),
        payments.stub.PayInvoice(
            api.PayInvoiceRequest(invoice_id=invoice, org_id=other), timeout=5
        ),
        payments.stub.RefundPayment(
            api.RefundPaymentRequest(payment_id=paid.payment_id, org_id=other), timeout=5
        ),
        payments.stub.SetDefaultPaymentMethod(
            api.SetDefaultPaymentMethodRequest(
                org_id=other, payment_method_id=method.payment_method_id
            ),
            timeout=5,
        ),
        payments.stub.DetachPaymentMethod(
            api.DetachPaymentMethodRequest(
                org_id=other, payment_method_id=method.payment_method_id
            ),
            timeout=5,
        ),
        payments.stub.ListPaymentAttempts(
            api.ListPaymentAttemptsRequest(payment_id=paid.payment_id, org_id=other), timeout=5
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await payments.stub.ListPaymentMethods(
            api.ListPaymentMethodsRequest(org_id=other), timeout=5
        )
    ).payment_methods == []


async def test_paying_a_paid_invoice_is_a_failed_precondition(payments: Harness) -> None:
    org, invoice, _ = await _paid(payments, 300)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.stub.PayInvoice(
            api.PayInvoiceRequest(invoice_id=invoice, org_id=org), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_setup_intent_and_detach(payments: Harness) -> None:
    org = new_id("org")
    intent = await payments.stub.CreateSetupIntent(
        api.CreateSetupIntentRequest(org_id=org, request_id="r1"), timeout=10
    )
    assert intent.setup_intent_id.startswith("seti_")
    assert intent.client_secret
    assert intent.provider == pb.PAYMENT_PROVIDER_STRIPE
    again = await payments.stub.CreateSetupIntent(
        api.CreateSetupIntentRequest(org_id=org, request_id="r1"), timeout=10
    )
    assert again.setup_intent_id == intent.setup_intent_id
    first = await payments.add_card(org)
    second = await payments.add_card(org, "pm_card_mastercard")
    listed = await payments.stub.ListPaymentMethods(
        api.ListPaymentMethodsRequest(org_id=org), timeout=5
    )
    assert [m.payment_method_id for m in listed.payment_methods] == [
        second.payment_method_id,
        first.payment_method_id,
    ]
    await payments.stub.DetachPaymentMethod(
        api.DetachPaymentMethodRequest(org_id=org, payment_method_id=second.payment_method_id),
        timeout=10,
    )
    listed = await payments.stub.ListPaymentMethods(
        api.ListPaymentMethodsRequest(org_id=org), timeout=5
    )
    assert [(m.payment_method_id, m.is_default) for m in listed.payment_methods] == [
        (first.payment_method_id, False)
    ]


async def test_tally_payments_sync_cli(
    payments: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli.main import main

    address = f"127.0.0.1:{payments.runtime.port}"
    code = await asyncio.to_thread(
        main, ["payments", "sync", "--address", address, "--since", "2026-01-01T00:00:00Z"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("checked ")
    assert "synced until " in out
    with pytest.raises(SystemExit) as bad:
        await asyncio.to_thread(main, ["payments", "sync", "--since", "yesterday"])
    assert bad.value.code == 1
    assert "ISO 8601" in capsys.readouterr().err
