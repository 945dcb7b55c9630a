"""Signed webhooks to a real local receiver: order, retries, drops, re-sends, delays, disputes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest
import stripe

from devtools.stripe_emulator import StripeEmulator
from devtools.stripe_emulator.webhooks import RETRY_DELAYS
from tests.unit.stripe_emulator.conftest import Receiver


async def _pay(client: stripe.StripeClient, token: str = "pm_card_visa") -> stripe.PaymentIntent:
    return await client.v1.payment_intents.create_async(
        params={"amount": 1200, "currency": "usd", "payment_method": token, "confirm": True}
    )


async def test_every_event_arrives_signed_and_in_order(
    emu: StripeEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    pi = await _pay(client)
    await emu.wait_for_deliveries()
    assert receiver.rejected == []
    assert receiver.types() == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    assert [e.id for e in receiver.events] == [e["id"] for e in emu.events]
    assert receiver.events[-1].data.object.id == pi.id
    assert [status for _, status in emu.deliveries] == [200, 200, 200]
    assert receiver.events[0].request.idempotency_key is not None


async def test_a_failing_receiver_is_retried_then_given_up(
    emu: StripeEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    receiver.failures = [500, 503]
    await client.v1.customers.create_async()
    await emu.wait_for_deliveries()
    event_id = emu.events[0]["id"]
    assert emu.deliveries == [(event_id, 500), (event_id, 503), (event_id, 200)]
    assert len(receiver.events) == 1

    receiver.failures = [500] * (len(RETRY_DELAYS) + 1)
    await client.v1.customers.create_async()
    await emu.wait_for_deliveries()
    assert [s for _, s in emu.deliveries[3:]] == [500] * (len(RETRY_DELAYS) + 1)
    assert len(receiver.events) == 1


async def test_a_receiver_that_is_down_is_recorded_as_status_zero(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    emu.webhook_url = "http://127.0.0.1:9/unreachable"
    emu.deliver_webhooks = False
    await client.v1.customers.create_async()
    event_id = emu.events[0]["id"]
    assert await emu.deliver(event_id) == [0]
    assert emu.deliveries == [(event_id, 0)]


async def test_dropped_events_are_recorded_and_can_be_resent(
    emu: StripeEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    emu.deliver_webhooks = False
    await _pay(client)
    await emu.wait_for_deliveries()
    assert receiver.events == [] and emu.deliveries == []
    listed = await client.v1.events.list_async(params={"type": "payment_intent.succeeded"})
    event_id = listed.data[0].id
    assert await emu.deliver(event_id, times=2) == [200, 200]
    assert [e.id for e in receiver.events] == [event_id, event_id]


async def test_forged_stale_and_rotated_signatures(
    emu: StripeEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    payload = json.dumps({"id": "evt_x", "object": "event"}).encode()
    stripe.Webhook.construct_event(payload, emu.sign(payload), emu.webhook_secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            payload, emu.sign(payload, timestamp=int(time.time()) - 3600), emu.webhook_secret
        )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            payload, emu.sign(payload, secret="whsec_other"), emu.webhook_secret
        )

    emu.webhook_secret = "whsec_rotated"
    emu.deliver_webhooks = False
    await client.v1.customers.create_async()
    event_id = emu.events[-1]["id"]
    assert await emu.deliver(event_id) == [400]
    assert len(receiver.rejected) == 1 and receiver.events == []
    receiver.secret = "whsec_rotated"
    assert await emu.deliver(event_id) == [200]


async def test_processing_delay_settles_later_via_webhook(
    emu: StripeEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    emu.processing_delay = 0.2
    pi = await _pay(client)
    declined = await _pay(client, "pm_card_chargeDeclined")
    assert (pi.status, declined.status) == ("processing", "processing")
    await receiver.wait_for("payment_intent.payment_failed")
    await receiver.wait_for("payment_intent.succeeded")
    assert (await client.v1.payment_intents.retrieve_async(pi.id)).status == "succeeded"
    failed = await client.v1.payment_intents.retrieve_async(declined.id)
    assert failed.status == "requires_payment_method"
    assert (
        failed.last_payment_error is not None and failed.last_payment_error.code == "card_declined"
    )
    of_pi = [e.type for e in receiver.events if e.data.object.id == pi.id]
    assert of_pi == [
        "payment_intent.created",
        "payment_intent.processing",
        "payment_intent.succeeded",
    ]
    settled = next(e for e in receiver.events if e.type == "payment_intent.succeeded")
    assert settled.request.id is None


async def test_a_dispute_emits_charge_dispute_created(
    emu: StripeEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    pi = await _pay(client)
    dispute = await emu.create_dispute(pi.id, amount=700)
    assert dispute["id"].startswith("dp_") and dispute["amount"] == 700
    await emu.wait_for_deliveries()
    event = receiver.events[-1]
    assert event.type == "charge.dispute.created"
    assert (event.data.object.payment_intent, event.data.object.charge) == (pi.id, pi.latest_charge)
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert charge.disputed


async def test_runs_as_a_process_until_sigterm(tmp_path: object) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devtools.stripe_emulator",
        "--port",
        "0",
        "--api-key",
        "sk_test_proc",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(15):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("stripe emulator on http://127.0.0.1:")
        base_url = line.split(" on ")[1].strip()
        client = stripe.StripeClient(
            "sk_test_proc", base_addresses={"api": base_url}, http_client=stripe.HTTPXClient()
        )
        customer = await client.v1.customers.create_async(params={"email": "p@example.com"})
        assert customer.id.startswith("cus_")
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
