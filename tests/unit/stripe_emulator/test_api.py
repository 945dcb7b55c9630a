"""The emulator driven by the official SDK (sync and async), as payments drives Stripe."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import stripe

from devtools.stripe_emulator import DEFAULT_API_KEY, StripeEmulator
from tests.unit.stripe_emulator.conftest import client_for, customer_with_card


async def _charge(client: stripe.StripeClient, **params: Any) -> stripe.PaymentIntent:
    return await client.v1.payment_intents.create_async(
        params={"amount": 1999, "currency": "usd", "confirm": True, **params}
    )


def _types(emu: StripeEmulator) -> list[str]:
    return [e["type"] for e in emu.events]


async def test_customer_setup_intent_attach_and_default_with_the_sync_client(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    def flow() -> None:
        customer = client.v1.customers.create(
            params={"email": "ops@acme.test", "name": "Acme", "metadata": {"org_id": "org_1"}}
        )
        seti = client.v1.setup_intents.create(
            params={
                "customer": customer.id,
                "payment_method_types": ["card"],
                "usage": "off_session",
            }
        )
        assert seti.status == "requires_payment_method"
        assert seti.client_secret.startswith(f"{seti.id}_secret_")
        confirmed = client.v1.setup_intents.confirm(
            seti.id, params={"payment_method": "pm_card_mastercard"}
        )
        assert confirmed.status == "succeeded"
        pm = client.v1.payment_methods.retrieve(str(confirmed.payment_method))
        assert pm.id.startswith("pm_") and pm.id != "pm_card_mastercard"
        assert (pm.customer, pm.type, pm.card.brand, pm.card.last4) == (
            customer.id,
            "card",
            "mastercard",
            "4444",
        )
        updated = client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
        )
        assert updated.invoice_settings.default_payment_method == pm.id
        assert updated.metadata["org_id"] == "org_1"
        listed = client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
        assert [m.id for m in listed.data] == [pm.id]
        assert [m.id for m in client.v1.customers.payment_methods.list(customer.id).data] == [pm.id]
        attached = client.v1.payment_methods.attach(
            "pm_card_visa", params={"customer": customer.id}
        )
        assert attached.customer == customer.id and attached.card.last4 == "4242"
        client.v1.payment_methods.detach(pm.id)
        assert (
            client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method
            is None
        )

    await asyncio.to_thread(flow)
    assert "setup_intent.succeeded" in _types(emu)
    assert _types(emu).count("payment_method.attached") == 2


async def test_a_good_card_succeeds_with_a_charge(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    customer, pm = await customer_with_card(client, "pm_card_visa")
    pi = await _charge(
        client,
        customer=customer,
        payment_method=pm,
        off_session=True,
        metadata={"invoice": "inv_1"},
    )
    assert pi.status == "succeeded" and pi.amount_received == 1999
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert (charge.amount_captured, charge.payment_intent, charge.status) == (
        1999,
        pi.id,
        "succeeded",
    )
    assert _types(emu)[-2:] == ["charge.succeeded", "payment_intent.succeeded"]
    assert emu.events[-1]["data"]["object"]["metadata"] == {"invoice": "inv_1"}
    expanded = await client.v1.payment_intents.retrieve_async(
        pi.id, params={"expand": ["latest_charge"]}
    )
    assert expanded.latest_charge.id == charge.id  # type: ignore[union-attr]


async def test_a_declined_card_raises_card_error_and_can_be_retried(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    customer, pm = await customer_with_card(client, "pm_card_chargeDeclined")
    with pytest.raises(stripe.CardError) as caught:
        await _charge(client, customer=customer, payment_method=pm, off_session=True)
    error = caught.value
    assert (error.http_status, error.code) == (402, "card_declined")
    assert error.error is not None
    assert error.error.decline_code == "generic_decline"
    assert error.error.message == "Your card was declined."
    assert error.error.charge.startswith("ch_")
    failed_pi = error.error.payment_intent
    assert failed_pi is not None and failed_pi.status == "requires_payment_method"
    assert failed_pi.last_payment_error.code == "card_declined"
    assert (
        error.error.payment_method is not None and error.error.payment_method.card.last4 == "0002"
    )
    event = emu.events[-1]
    assert event["type"] == "payment_intent.payment_failed"
    assert event["data"]["object"]["last_payment_error"]["decline_code"] == "generic_decline"

    retried = await client.v1.payment_intents.confirm_async(
        failed_pi.id, params={"payment_method": "pm_card_visa"}
    )
    assert retried.status == "succeeded"


async def test_authentication_required_off_session_is_a_card_error(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    customer, pm = await customer_with_card(client, "pm_card_authenticationRequired")
    with pytest.raises(stripe.CardError) as caught:
        await _charge(client, customer=customer, payment_method=pm, off_session=True)
    assert caught.value.code == "authentication_required"
    assert caught.value.error is not None and caught.value.error.payment_intent is not None
    assert caught.value.error.payment_intent.status == "requires_payment_method"
    assert emu.events[-1]["type"] == "payment_intent.payment_failed"


async def test_authentication_required_on_session_requires_action(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    pi = await _charge(client, payment_method="pm_card_authenticationRequired")
    assert pi.status == "requires_action"
    assert pi.next_action is not None and pi.next_action.type == "use_stripe_sdk"
    assert emu.events[-1]["type"] == "payment_intent.requires_action"
    pi = await client.v1.payment_intents.confirm_async(pi.id)
    assert pi.status == "succeeded"


async def test_errors_map_to_the_sdk_exception_classes(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.AuthenticationError):
        await client_for(emu, "sk_test_wrong").v1.customers.create_async()
    with pytest.raises(stripe.InvalidRequestError) as missing_pi:
        await client.v1.payment_intents.retrieve_async("pi_x")
    assert (missing_pi.value.http_status, missing_pi.value.code, missing_pi.value.param) == (
        404,
        "resource_missing",
        "id",
    )
    assert str(missing_pi.value.user_message) == "No such payment_intent: 'pi_x'"
    with pytest.raises(stripe.InvalidRequestError) as no_amount:
        await client.v1.payment_intents.create_async(params={"currency": "usd"})  # type: ignore[typeddict-item]
    assert (no_amount.value.code, no_amount.value.param) == ("parameter_missing", "amount")
    with pytest.raises(stripe.InvalidRequestError) as bad_amount:
        await client.v1.payment_intents.create_async(params={"amount": "ten", "currency": "usd"})  # type: ignore[typeddict-item]
    assert bad_amount.value.code == "parameter_invalid_integer"
    async with httpx.AsyncClient() as http:
        unknown = await http.get(
            f"{emu.base_url}/v1/nowhere", headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        )
        unauthorized = await http.get(f"{emu.base_url}/v1/events")
    assert (
        unknown.status_code == 404
        and "Unrecognized request URL" in unknown.json()["error"]["message"]
    )
    assert unauthorized.status_code == 401 and unauthorized.headers["Request-Id"].startswith("req_")


async def test_idempotent_replay_makes_no_second_charge(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    params: Any = {
        "amount": 500,
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "confirm": True,
    }
    first = await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": "inv-1-a1"}
    )
    again = await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": "inv-1-a1"}
    )
    assert (again.id, again.latest_charge) == (first.id, first.latest_charge)
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.body == first.last_response.body
    assert _types(emu).count("charge.succeeded") == 1
    assert emu.requests.count(("POST", "/v1/payment_intents", "inv-1-a1")) == 2

    with pytest.raises(stripe.IdempotencyError) as mismatch:
        await client.v1.payment_intents.create_async(
            params={**params, "amount": 501}, options={"idempotency_key": "inv-1-a1"}
        )
    assert "inv-1-a1" in str(mismatch.value.user_message)


async def test_a_declined_attempt_is_replayed_as_the_same_card_error(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    params: Any = {
        "amount": 700,
        "currency": "usd",
        "payment_method": "pm_card_chargeDeclined",
        "confirm": True,
    }
    bodies = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as caught:
            await client.v1.payment_intents.create_async(
                params=params, options={"idempotency_key": "k-402"}
            )
        bodies.append(caught.value.http_body)
    assert bodies[0] == bodies[1]
    assert _types(emu).count("payment_intent.payment_failed") == 1


async def test_refunds_partial_full_and_over(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    pi = await _charge(client, payment_method="pm_card_visa")
    partial = await client.v1.refunds.create_async(
        params={"payment_intent": pi.id, "amount": 500, "reason": "requested_by_customer"}
    )
    assert (partial.status, partial.amount, partial.payment_intent) == ("succeeded", 500, pi.id)
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 1500})
    assert too_large.value.code == "amount_too_large"
    rest = await client.v1.refunds.create_async(params={"charge": str(pi.latest_charge)})
    assert rest.amount == 1499
    with pytest.raises(stripe.InvalidRequestError) as again:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id})
    assert again.value.code == "charge_already_refunded"

    refunded = [e["data"]["object"] for e in emu.events if e["type"] == "charge.refunded"]
    assert [(c["amount_refunded"], c["refunded"]) for c in refunded] == [(500, False), (1999, True)]
    assert refunded[-1]["refunds"]["total_count"] == 2
    assert _types(emu)[-2:] == ["charge.refunded", "refund.created"]
    listed = await client.v1.refunds.list_async(params={"payment_intent": pi.id})
    assert [r.id for r in listed.data] == [rest.id, partial.id]
    assert (await client.v1.refunds.retrieve_async(partial.id)).amount == 500


async def test_events_and_payment_intents_list_with_filters_and_pages(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    customer = await client.v1.customers.create_async()
    for amount in (100, 200, 300):
        await _charge(client, amount=amount, customer=customer.id, payment_method="pm_card_visa")
    everything = [e["id"] for e in reversed(emu.events)]
    created = emu.events[0]["created"]

    page = await client.v1.events.list_async(params={"limit": 4})
    assert [e.id for e in page.data] == everything[:4] and page.has_more
    nxt = await client.v1.events.list_async(
        params={"limit": 100, "starting_after": page.data[-1].id}
    )
    assert [e.id for e in nxt.data] == everything[4:] and not nxt.has_more
    back = await client.v1.events.list_async(params={"limit": 2, "ending_before": nxt.data[0].id})
    assert [e.id for e in back.data] == everything[2:4]
    last = emu.events[-1]["created"]
    assert (await client.v1.events.list_async(params={"created": {"gt": last}})).data == []
    since_first = await client.v1.events.list_async(
        params={"created": {"gte": created}, "limit": 100}
    )
    assert [e.id for e in since_first.data] == everything
    up_to_first = await client.v1.events.list_async(
        params={"created": {"lte": created}, "limit": 100}
    )
    assert [e.id for e in up_to_first.data] == [
        e["id"] for e in reversed(emu.events) if e["created"] <= created
    ]
    succeeded = await client.v1.events.list_async(params={"type": "payment_intent.succeeded"})
    assert len(succeeded.data) == 3
    several = await client.v1.events.list_async(
        params={"types": ["charge.succeeded", "customer.created"], "limit": 100}
    )
    assert sorted({e.type for e in several.data}) == ["charge.succeeded", "customer.created"]
    one = await client.v1.events.retrieve_async(everything[0])
    assert one.type == "payment_intent.succeeded" and one.api_version == stripe.api_version

    intents = await client.v1.payment_intents.list_async(
        params={"customer": customer.id, "limit": 2, "created": {"lte": created + 60}}
    )
    assert [pi.amount for pi in intents.data] == [300, 200] and intents.has_more
    rest = await client.v1.payment_intents.list_async(
        params={"customer": customer.id, "starting_after": intents.data[-1].id}
    )
    assert [pi.amount for pi in rest.data] == [100]
