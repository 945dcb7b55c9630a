"""POST /webhooks/stripe: verified by the SDK over the raw bytes, applied once,
never backwards; anything unverifiable answers 400 and changes nothing."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from tally.payments.v1 import resources_pb2 as pb

from services.payments.repository import provider_event_table
from tests.support.payments import Harness, new_id, running_payments

pytestmark = pytest.mark.integration

PREVIOUS_SECRET = "whsec_previous_rotation"


@pytest.fixture(scope="module")
async def payments(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_payments(
        database_url, nats_url, PAYMENTS_STRIPE_WEBHOOK_SECRET_PREVIOUS=PREVIOUS_SECRET
    ) as harness:
        yield harness


async def _paid(payments: Harness) -> tuple[str, pb.Payment]:
    org = new_id("org")
    await payments.add_card(org)
    invoice = await payments.finalize_invoice(org, 1200)
    paid = await payments.wait_payment(invoice, pb.PAYMENT_STATE_SUCCEEDED)
    await payments.emu.wait_for_deliveries()
    return invoice, paid


def _event(payments: Harness, kind: str, intent_id: str) -> dict[str, Any]:
    return next(
        e
        for e in payments.emu.events
        if e["type"] == kind and e["data"]["object"]["id"] == intent_id
    )


async def _post(payments: Harness, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    async with httpx.AsyncClient() as client:
        return await client.post(payments.webhook_url, content=body, headers=headers)


async def _inbox_count(payments: Harness) -> int:
    assert payments.runtime.context is not None
    async with payments.runtime.context.database.session() as session:
        count = await session.scalar(select(func.count()).select_from(provider_event_table))
    return int(count or 0)


async def test_duplicated_webhook_is_applied_once(payments: Harness) -> None:
    invoice, paid = await _paid(payments)
    event = _event(payments, "payment_intent.succeeded", paid.provider_payment_intent_id)
    assert await payments.emu.deliver(event["id"], times=3) == [200, 200, 200]
    assert len(await payments.events("payment.succeeded", invoice)) == 1


async def test_forged_stale_missing_and_non_json_answer_400(payments: Harness) -> None:
    org = new_id("org")
    await payments.add_card(org, "pm_card_chargeDeclined")
    invoice = await payments.finalize_invoice(org, 800)
    failed = await payments.wait_payment(invoice, pb.PAYMENT_STATE_RETRY_SCHEDULED)
    await payments.emu.wait_for_deliveries()
    # A forged "succeeded" for the declined intent: would mark it paid if accepted.
    forged = copy.deepcopy(
        _event(payments, "payment_intent.payment_failed", failed.provider_payment_intent_id)
    )
    forged["id"] = "evt_forged_" + new_id("x")
    forged["type"] = "payment_intent.succeeded"
    forged["data"]["object"]["status"] = "succeeded"
    body = json.dumps(forged).encode()
    before = await _inbox_count(payments)
    answers = [
        await _post(payments, body, payments.emu.sign(body, secret="whsec_attacker")),
        await _post(payments, body, payments.emu.sign(body, timestamp=int(time.time()) - 301)),
        await _post(payments, body, None),
        await _post(payments, body, "t=1,v1=deadbeef"),
        await _post(payments, b"not json", payments.emu.sign(b"not json")),
        # Signed, but altered after signing.
        await _post(payments, body + b" ", payments.emu.sign(body)),
    ]
    assert [a.status_code for a in answers] == [400] * 6
    assert all(a.headers["content-type"].startswith("application/problem+json") for a in answers)
    assert await _inbox_count(payments) == before
    still = await payments.payment_of(invoice)
    assert still is not None and still.state == pb.PAYMENT_STATE_RETRY_SCHEDULED
    assert await payments.events("payment.succeeded", invoice) == []


async def test_out_of_order_failure_after_success_changes_nothing(payments: Harness) -> None:
    invoice, paid = await _paid(payments)
    succeeded = _event(payments, "payment_intent.succeeded", paid.provider_payment_intent_id)
    late = copy.deepcopy(succeeded)
    late["id"] = "evt_late_" + new_id("x")
    late["type"] = "payment_intent.payment_failed"
    late["created"] = succeeded["created"] - 5
    late["data"]["object"]["status"] = "requires_payment_method"
    late["data"]["object"]["last_payment_error"] = {
        "code": "card_declined",
        "message": "Your card was declined.",
    }
    body = json.dumps(late).encode()
    answer = await _post(payments, body, payments.emu.sign(body))
    assert answer.status_code == 200
    after = await payments.payment_of(invoice)
    assert after is not None
    assert after.state == pb.PAYMENT_STATE_SUCCEEDED
    assert after.failure_code == ""
    (attempt,) = await payments.attempts(paid.payment_id)
    assert attempt.state == pb.ATTEMPT_STATE_SUCCEEDED
    assert await payments.events("payment.failed", invoice) == []


async def test_previous_secret_is_accepted_during_rotation(payments: Harness) -> None:
    invoice, paid = await _paid(payments)
    event = copy.deepcopy(
        _event(payments, "payment_intent.succeeded", paid.provider_payment_intent_id)
    )
    event["id"] = "evt_rotated_" + new_id("x")
    body = json.dumps(event).encode()
    answer = await _post(payments, body, payments.emu.sign(body, secret=PREVIOUS_SECRET))
    assert answer.status_code == 200
    assert answer.json() == {"received": True, "duplicate": False}
    again = await _post(payments, body, payments.emu.sign(body, secret=PREVIOUS_SECRET))
    assert again.json() == {"received": True, "duplicate": True}
    assert len(await payments.events("payment.succeeded", invoice)) == 1


async def test_unused_event_types_are_acknowledged(payments: Harness) -> None:
    await _paid(payments)
    charge_events = [e for e in payments.emu.events if e["type"] == "charge.succeeded"]
    assert charge_events
    statuses = await payments.emu.deliver(charge_events[-1]["id"])
    assert statuses == [200]


async def test_authentication_required_is_an_action_not_a_failure(payments: Harness) -> None:
    org = new_id("org")
    await payments.add_card(org, "pm_card_authenticationRequired")
    invoice = await payments.finalize_invoice(org, 700)
    waiting = await payments.wait_payment(invoice, pb.PAYMENT_STATE_REQUIRES_ACTION)
    assert not waiting.HasField("next_retry_time")
    actions = await payments.wait_events("payment.action_required", invoice, 1)
    assert [a.reason for a in actions] == [pb.ACTION_REQUIRED_REASON_AUTHENTICATION_REQUIRED]  # type: ignore[attr-defined]
    await payments.emu.wait_for_deliveries()
    assert await payments.events("payment.failed", invoice) == []


async def test_dispute_is_recorded(payments: Harness) -> None:
    _, paid = await _paid(payments)
    dispute = await payments.emu.create_dispute(paid.provider_payment_intent_id)
    await payments.emu.wait_for_deliveries()
    assert (
        next(e["id"] for e in payments.emu.events if e["type"] == "charge.dispute.created"),
        200,
    ) in payments.emu.deliveries
    assert payments.runtime.context is not None
    from services.payments.repository import payment_table

    async with payments.runtime.context.database.session() as session:
        row = (
            await session.execute(
                select(payment_table.c.dispute_id, payment_table.c.dispute_amount_minor).where(
                    payment_table.c.payment_id == paid.payment_id
                )
            )
        ).one()
    assert (row.dispute_id, row.dispute_amount_minor) == (dispute["id"], 1200)
