"""The money path's failure branch with the real subscriptions service: a
declined card walks the dunning schedule to the final failure, the
subscription goes past_due; a new card and "retry payment" bring it back."""

from __future__ import annotations

import pytest
from tally.payments.v1 import payments_pb2 as api
from tally.payments.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb
from tally.subscriptions.v1 import subscriptions_pb2 as subs_api

from tests.support import subscriptions as subs
from tests.support.payments import new_id, running_payments, wait_for

pytestmark = pytest.mark.integration


async def test_final_failure_is_past_due_and_a_new_card_recovers(
    database_url: str, nats_url: str
) -> None:
    async with (
        subs.running_service(database_url, nats_url) as subscriptions,
        running_payments(database_url, nats_url) as payments,
    ):
        version = subs.package_version("basic", base_fee="25")
        await subscriptions.publish_version(version)
        sub = await subs.create(subscriptions, version)

        async def state() -> int:
            reply = await subscriptions.stub.GetSubscription(
                subs_api.GetSubscriptionRequest(subscription_id=sub.subscription_id), timeout=5
            )
            return int(reply.subscription.state)

        await payments.add_card(sub.org_id, "pm_card_chargeDeclined")
        invoice = await payments.finalize_invoice(
            sub.org_id, 2500, subscription=sub.subscription_id
        )
        payment = await payments.wait_payment(invoice, pb.PAYMENT_STATE_RETRY_SCHEDULED)
        payment, waits = await payments.walk_dunning(payment)
        assert (waits, payment.state) == ([1, 3, 5], pb.PAYMENT_STATE_FAILED)

        async def is_past_due() -> bool:
            return await state() == subs_pb.SUBSCRIPTION_STATE_PAST_DUE

        await wait_for(is_past_due)

        await payments.add_card(sub.org_id, "pm_card_visa")
        reply = await payments.stub.PayInvoice(
            api.PayInvoiceRequest(
                invoice_id=invoice, org_id=sub.org_id, request_id=new_id("retry")
            ),
            timeout=10,
        )
        assert reply.payment.state == pb.PAYMENT_STATE_SUCCEEDED

        async def is_active() -> bool:
            return await state() == subs_pb.SUBSCRIPTION_STATE_ACTIVE

        await wait_for(is_active)
