"""Outbound webhooks against real PostgreSQL and NATS and a local receiver:
every selected event arrives signed, once per delivery id, through a receiver
answering 500 and then down; retries follow the backoff (the test moves the
dispatcher's clock); resend; sustained failure disables; orgs stay apart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from tally.events.v1 import invoicing_events_pb2 as ie
from tally.events.v1 import payments_events_pb2 as pe
from tally.events.v1 import subscriptions_events_pb2 as se
from tally.payments.v1 import webhooks_pb2 as wh
from tally.subscriptions.v1 import resources_pb2 as sub_pb2
from tally.type.v1 import money_pb2

from services.kit.devstack import free_port
from services.payments.bootstrap import webhook_dispatcher_of
from services.payments.outbound import domain as d
from services.payments.outbound import handlers as h
from services.payments.outbound.dispatcher import WebhookDispatcher
from services.payments.outbound.store import Delivery, Endpoint
from services.usage.emitter import WebhookSignatureError, verify_signature
from tests.support.gateway import admin_headers, gateway_client, gateway_settings, portal_headers
from tests.support.metrics import scrape, value
from tests.support.payments import Harness, new_id, running_payments, wait_for
from tests.support.subscriptions import details
from tests.support.webhooks import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def payments(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_payments(database_url, nats_url) as harness:
        yield harness


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def dispatcher(payments: Harness) -> WebhookDispatcher:
    assert payments.runtime.context is not None
    return webhook_dispatcher_of(payments.runtime.context)


async def endpoint(payments: Harness, org: str, url: str, types: list[str]) -> Endpoint:
    async with payments.collector.make_uow() as uow:
        created = await h.create_endpoint(
            uow, h.NewEndpoint(org_id=org, url=url, event_types=types), datetime.now(UTC)
        )
        await uow.commit()
    return created


async def endpoint_now(payments: Harness, endpoint_id: str) -> Endpoint:
    async with payments.collector.make_uow() as uow:
        return await h.get_endpoint(uow, endpoint_id)


async def deliveries(payments: Harness, endpoint_id: str) -> list[Delivery]:
    async with payments.collector.make_uow() as uow:
        return await uow.webhooks.deliveries(endpoint_id, None, 100)


async def wait_deliveries(payments: Harness, endpoint_id: str, count: int) -> list[Delivery]:
    async def check() -> bool:
        return len(await deliveries(payments, endpoint_id)) >= count

    await wait_for(check)
    return await deliveries(payments, endpoint_id)


async def settled_first_attempts(payments: Harness, endpoint_id: str, count: int) -> None:
    """Wait until the background dispatcher made every delivery's first attempt."""

    async def check() -> bool:
        found = await deliveries(payments, endpoint_id)
        return len(found) >= count and all(x.attempt_count >= 1 for x in found)

    await wait_for(check)


async def invoice_paid(payments: Harness, org: str) -> str:
    invoice = new_id("inv")
    await payments.publish(
        ie.InvoicePaidEvent(invoice_id=invoice, org_id=org, payment_id=new_id("pay")), invoice
    )
    return invoice


async def payment_succeeded(payments: Harness, org: str) -> str:
    payment = new_id("pay")
    await payments.publish(
        pe.PaymentSucceededEvent(
            payment_id=payment,
            org_id=org,
            invoice_id=new_id("inv"),
            amount=money_pb2.Money(amount_minor=4900, currency_code="USD"),
        ),
        payment,
    )
    return payment


async def subscription_created(payments: Harness, org: str) -> str:
    sub = new_id("sub")
    await payments.publish(
        se.SubscriptionCreatedEvent(
            subscription=sub_pb2.Subscription(subscription_id=sub, org_id=org)
        ),
        sub,
    )
    return sub


def signed_at(header: str) -> int:
    return int(dict(p.split("=", 1) for p in header.split(",") if p.startswith("t="))["t"])


def assert_signed(received_body: bytes, header: str, secret: str) -> None:
    verify_signature(received_body, header, secret, now=signed_at(header))


async def test_every_event_arrives_signed_once_through_500_and_down(
    payments: Harness, receiver: Receiver
) -> None:
    assert payments.runtime.http is not None
    metrics_url = f"http://127.0.0.1:{payments.runtime.http.port}"
    before = await scrape(metrics_url)
    org = new_id("org")
    ep = await endpoint(payments, org, receiver.url(), ["invoice.paid", "payment.*"])
    receiver.status = 500
    invoice = await invoice_paid(payments, org)
    payment = await payment_succeeded(payments, org)
    await subscription_created(payments, org)  # not selected: never delivered
    # A marker after the unselected event: once it is delivered, the
    # subscription event has been consumed (one stream per producer, so the
    # marker goes on the subscriptions stream too).
    await wait_deliveries(payments, ep.endpoint_id, 2)
    await settled_first_attempts(payments, ep.endpoint_id, 2)
    first = {x.delivery_id: x for x in await deliveries(payments, ep.endpoint_id)}
    assert all(x.state is d.DeliveryState.PENDING for x in first.values())
    assert all(x.last_status_code == 500 and x.attempt_count == 1 for x in first.values())
    policy = dispatcher(payments).policy
    for x in first.values():
        assert x.last_attempt_time is not None and x.next_attempt_time is not None
        assert x.next_attempt_time - x.last_attempt_time == policy.wait_after(1)

    # Down: the retry at its due time cannot connect; the next wait doubles.
    await receiver.stop()
    due = max(x.next_attempt_time for x in first.values() if x.next_attempt_time)
    retried = await dispatcher(payments).run_once(due)
    assert {x.delivery_id for x in retried} == set(first)
    for x in retried:
        assert x.attempt_count == 2 and x.last_status_code is None
        assert x.last_error and x.next_attempt_time is not None
        assert x.next_attempt_time - due == policy.wait_after(2)
    # Nothing is due before the doubled wait has passed.
    assert await dispatcher(payments).run_once(due + policy.wait_after(2) / 2) == []

    await receiver.start()
    receiver.status = 200
    later = due + policy.wait_after(2)
    sent = await dispatcher(payments).run_once(later)
    assert {x.state for x in sent} == {d.DeliveryState.SUCCEEDED}
    assert all(x.attempt_count == 3 and x.last_status_code == 200 for x in sent)
    assert await dispatcher(payments).run_once(later + timedelta(days=4)) == []

    ok = receiver.ok()
    assert sorted(r.headers["tally-delivery-id"] for r in ok) == sorted(first)
    bodies = {r.json["id"]: r for r in ok}
    assert set(bodies) == set(first)
    for r in ok:
        assert_signed(r.body, r.headers["tally-signature"], ep.secret)
        assert r.json["org_id"] == org
        assert r.json["id"] == r.headers["tally-delivery-id"]
        assert r.headers["tally-event-type"] == r.json["type"]
    by_type = {r.json["type"]: r.json for r in ok}
    assert set(by_type) == {"invoice.paid", "payment.succeeded"}
    assert by_type["invoice.paid"]["data"]["invoice_id"] == invoice
    assert by_type["payment.succeeded"]["data"]["payment_id"] == payment
    assert by_type["payment.succeeded"]["data"]["amount"]["amount_minor"] == "4900"
    # The 500 answers carried the same ids: a receiver dedupes by them.
    assert {r.json["id"] for r in receiver.requests} == set(first)
    # billing.webhook.attempts{outcome}: two deliveries, two failures each, then success.
    after = await scrape(metrics_url)

    def moved(outcome: str) -> float:
        name = "billing_webhook_attempts_total"
        return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)

    assert (moved("retrying"), moved("succeeded"), moved("failed")) == (4, 2, 0)


async def test_a_forged_or_altered_body_fails_verification(
    payments: Harness, receiver: Receiver
) -> None:
    org = new_id("org")
    ep = await endpoint(payments, org, receiver.url(), ["invoice.*"])
    await invoice_paid(payments, org)
    await wait_for(lambda: _has(receiver, 1))
    got = receiver.ok()[0]
    header = got.headers["tally-signature"]
    with pytest.raises(WebhookSignatureError):
        verify_signature(got.body + b" ", header, ep.secret, now=signed_at(header))
    with pytest.raises(WebhookSignatureError):
        verify_signature(got.body, header, "whsec_other", now=signed_at(header))
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(got.body, header, ep.secret, now=signed_at(header) + 301)


async def _has(receiver: Receiver, count: int) -> bool:
    return len(receiver.ok()) >= count


async def test_resend_sends_the_same_id_again(payments: Harness, receiver: Receiver) -> None:
    org = new_id("org")
    ep = await endpoint(payments, org, receiver.url(), ["invoice.paid"])
    await invoice_paid(payments, org)
    await wait_for(lambda: _has(receiver, 1))
    (delivered,) = await wait_deliveries(payments, ep.endpoint_id, 1)
    await wait_for(lambda: _state_is(payments, delivered.delivery_id, d.DeliveryState.SUCCEEDED))
    now = datetime.now(UTC)
    async with payments.collector.make_uow() as uow:
        again = await h.resend(uow, delivered.delivery_id, org, now)
        await uow.commit()
    assert again.state is d.DeliveryState.PENDING
    await dispatcher(payments).run_once(now)
    await wait_for(lambda: _has(receiver, 2))
    ids = [r.json["id"] for r in receiver.ok()]
    assert ids == [delivered.delivery_id, delivered.delivery_id]
    (after,) = await deliveries(payments, ep.endpoint_id)
    assert after.state is d.DeliveryState.SUCCEEDED and after.attempt_count == 2
    # Another org cannot resend it: its delivery is not found.
    async with payments.collector.make_uow() as uow:
        with pytest.raises(Exception, match="not found"):
            await h.resend(uow, delivered.delivery_id, new_id("org"), now)


async def _state_is(payments: Harness, delivery_id: str, state: d.DeliveryState) -> bool:
    async with payments.collector.make_uow() as uow:
        found = await uow.webhooks.delivery(delivery_id)
    return found is not None and found.state is state


async def test_sustained_failure_disables_the_endpoint(
    payments: Harness, receiver: Receiver
) -> None:
    org = new_id("org")
    ep = await endpoint(payments, org, receiver.url(), ["invoice.paid"])
    receiver.status = 503
    await invoice_paid(payments, org)
    await settled_first_attempts(payments, ep.endpoint_id, 1)
    (x,) = await deliveries(payments, ep.endpoint_id)
    assert x.first_attempt_time is not None
    start = x.first_attempt_time
    tries = 1
    while x.next_attempt_time is not None:
        (x,) = await dispatcher(payments).run_once(x.next_attempt_time)
        tries += 1
        assert tries < 100
    assert x.state is d.DeliveryState.FAILED
    assert x.last_attempt_time is not None
    policy = dispatcher(payments).policy
    # Retried for as long as the schedule allows, never past 3 days.
    assert policy.horizon - policy.max_wait <= x.last_attempt_time - start <= policy.horizon
    assert len(receiver.requests) == tries
    disabled = await endpoint_now(payments, ep.endpoint_id)
    assert not disabled.enabled
    assert disabled.disabled_reason.startswith("webhook_endpoint.disabled")
    # A disabled endpoint hears nothing more until enabled again.
    receiver.status = 200
    marker = await endpoint(payments, org, receiver.url("/marker"), ["invoice.paid"])
    await invoice_paid(payments, org)
    await wait_for(lambda: _has(receiver, 1))
    assert len(await deliveries(payments, ep.endpoint_id)) == 1
    assert [r.path for r in receiver.ok()] == ["/marker"]
    async with payments.collector.make_uow() as uow:
        enabled = await h.update_endpoint(
            uow, ep.endpoint_id, org, h.EndpointChange(enabled=True), datetime.now(UTC)
        )
        await uow.commit()
    assert enabled.enabled and enabled.failing_since is None and not enabled.disabled_reason
    assert marker.enabled


async def test_an_endpoint_never_hears_another_orgs_events(
    payments: Harness, receiver: Receiver
) -> None:
    org_a, org_b = new_id("org"), new_id("org")
    await endpoint(payments, org_a, receiver.url("/a"), ["*"])
    await endpoint(payments, org_b, receiver.url("/b"), ["*"])
    await invoice_paid(payments, org_b)
    await payment_succeeded(payments, org_b)
    await subscription_created(payments, org_b)
    await invoice_paid(payments, org_a)
    await wait_for(lambda: _has(receiver, 4))
    a = receiver.ok("/a")
    b = receiver.ok("/b")
    assert [r.json["org_id"] for r in a] == [org_a]
    assert {r.json["type"] for r in b} == {
        "invoice.paid",
        "payment.succeeded",
        "subscription.created",
    }
    assert {r.json["org_id"] for r in b} == {org_b}


async def test_a_redelivered_event_adds_no_second_delivery(payments: Harness) -> None:
    org = new_id("org")
    ep = await endpoint(payments, org, "http://127.0.0.1:9/never", ["invoice.paid"])
    # Disabled so the background dispatcher leaves it alone.
    async with payments.collector.make_uow() as uow:
        await h.update_endpoint(uow, ep.endpoint_id, org, h.EndpointChange(enabled=False), _now())
        await uow.commit()
    event = ie.InvoicePaidEvent(invoice_id=new_id("inv"), org_id=org)
    from services.kit.events import EventEnvelope

    envelope = EventEnvelope.wrap(event, aggregate_id=event.invoice_id)
    async with payments.collector.make_uow() as uow:
        await h.update_endpoint(uow, ep.endpoint_id, org, h.EndpointChange(enabled=True), _now())
        assert await h.record_deliveries(uow, envelope, event, _now()) == 1
        assert await h.record_deliveries(uow, envelope, event, _now()) == 0
        body = json.loads((await uow.webhooks.deliveries(ep.endpoint_id, None, 10))[0].payload)
        # Rolled back: nothing is left for the background dispatcher.
    assert body["id"] == d.delivery_id(envelope.event_id, ep.endpoint_id)
    assert body["created"] == int(envelope.occurred_at.timestamp())


def _now() -> datetime:
    return datetime.now(UTC)


async def test_the_endpoints_api_over_grpc(payments: Harness, receiver: Receiver) -> None:
    org = new_id("org")
    stub = payments.stub
    created = await stub.CreateWebhookEndpoint(
        wh.CreateWebhookEndpointRequest(
            org_id=org, url=receiver.url(), event_types=["invoice.paid"], request_id=new_id("r")
        ),
        timeout=5,
    )
    ep = created.webhook_endpoint
    assert created.secret.startswith("whsec_") and ep.enabled
    got = await stub.GetWebhookEndpoint(
        wh.GetWebhookEndpointRequest(org_id=org, endpoint_id=ep.endpoint_id), timeout=5
    )
    assert got.webhook_endpoint == ep
    listed = await stub.ListWebhookEndpoints(wh.ListWebhookEndpointsRequest(org_id=org), timeout=5)
    assert [e.endpoint_id for e in listed.webhook_endpoints] == [ep.endpoint_id]

    # Every bad field in one answer.
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.CreateWebhookEndpoint(
            wh.CreateWebhookEndpointRequest(
                org_id=org, url="ftp://x", event_types=["invoice.exploded"]
            ),
            timeout=5,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, _, fields = details(bad.value)
    assert set(fields) == {"url", "event_types[0]"}
    # Another org's endpoint is not found.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.GetWebhookEndpoint(
            wh.GetWebhookEndpointRequest(org_id=new_id("org"), endpoint_id=ep.endpoint_id),
            timeout=5,
        )
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(other.value)[0] == "WEBHOOK_ENDPOINT_NOT_FOUND"

    await invoice_paid(payments, org)
    await wait_for(lambda: _has(receiver, 1))
    assert_signed(
        receiver.ok()[0].body, receiver.ok()[0].headers["tally-signature"], created.secret
    )

    rotated = await stub.RotateWebhookEndpointSecret(
        wh.RotateWebhookEndpointSecretRequest(org_id=org, endpoint_id=ep.endpoint_id), timeout=5
    )
    assert rotated.secret != created.secret
    log = await stub.ListWebhookDeliveries(
        wh.ListWebhookDeliveriesRequest(org_id=org, endpoint_id=ep.endpoint_id), timeout=5
    )
    (entry,) = log.webhook_deliveries
    assert entry.state == wh.WEBHOOK_DELIVERY_STATE_SUCCEEDED
    assert entry.last_status_code == 200 and entry.attempt_count == 1
    resent = await stub.ResendWebhookDelivery(
        wh.ResendWebhookDeliveryRequest(org_id=org, delivery_id=entry.delivery_id), timeout=5
    )
    assert resent.webhook_delivery.state == wh.WEBHOOK_DELIVERY_STATE_PENDING
    # The resend wakes the dispatcher; during the rotation both secrets sign it.
    await wait_for(lambda: _has(receiver, 2))
    again = receiver.ok()[1]
    assert again.json["id"] == entry.delivery_id
    assert_signed(again.body, again.headers["tally-signature"], rotated.secret)
    assert_signed(again.body, again.headers["tally-signature"], created.secret)

    updated = await stub.UpdateWebhookEndpoint(
        wh.UpdateWebhookEndpointRequest(
            org_id=org,
            webhook_endpoint=wh.WebhookEndpoint(endpoint_id=ep.endpoint_id, enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        ),
        timeout=5,
    )
    assert not updated.webhook_endpoint.enabled
    assert updated.webhook_endpoint.url == receiver.url()
    with pytest.raises(grpc.aio.AioRpcError) as disabled:
        await stub.ResendWebhookDelivery(
            wh.ResendWebhookDeliveryRequest(org_id=org, delivery_id=entry.delivery_id), timeout=5
        )
    assert disabled.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stub.DeleteWebhookEndpoint(
        wh.DeleteWebhookEndpointRequest(org_id=org, endpoint_id=ep.endpoint_id), timeout=5
    )
    listed = await stub.ListWebhookEndpoints(wh.ListWebhookEndpointsRequest(org_id=org), timeout=5)
    assert list(listed.webhook_endpoints) == []


async def test_the_portal_and_admin_routes_through_the_gateway(payments: Harness) -> None:
    org = new_id("org")
    nobody = f"127.0.0.1:{free_port()}"
    settings = gateway_settings(
        catalog_addr=nobody,
        subscriptions_addr=nobody,
        usage_addr=nobody,
        invoicing_addr=nobody,
        payments_addr=f"127.0.0.1:{payments.runtime.port}",
        grpc_deadline_seconds=3.0,
    )
    async with gateway_client(settings) as client:
        made = await client.post(
            "/portal/billing/v1/webhookEndpoints",
            json={"url": "https://example.com/hook", "eventTypes": ["subscription.*"]},
            headers=portal_headers(org),
        )
        assert made.status_code == 200, made.text
        body = made.json()
        endpoint_id = body["webhookEndpoint"]["endpointId"]
        assert body["webhookEndpoint"]["orgId"] == org and body["secret"]
        # Staff see it under the org; another org's portal does not.
        listed = await client.get(
            f"/super-admin/billing/v1/orgs/{org}/webhookEndpoints", headers=admin_headers()
        )
        assert [e["endpointId"] for e in listed.json()["webhookEndpoints"]] == [endpoint_id]
        assert "secret" not in listed.json()["webhookEndpoints"][0]
        stranger = await client.get(
            f"/portal/billing/v1/webhookEndpoints/{endpoint_id}",
            headers=portal_headers(new_id("org")),
        )
        assert stranger.status_code == 404
        bad = await client.post(
            "/portal/billing/v1/webhookEndpoints",
            json={"url": "nope", "eventTypes": []},
            headers=portal_headers(org),
        )
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
        patched = await client.patch(
            f"/super-admin/billing/v1/orgs/{org}/webhookEndpoints/{endpoint_id}",
            json={"webhookEndpoint": {"url": "https://example.com/v2"}, "updateMask": "url"},
            headers=admin_headers(),
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["webhookEndpoint"]["url"] == "https://example.com/v2"
        log = await client.get(
            f"/portal/billing/v1/webhookEndpoints/{endpoint_id}/deliveries",
            headers=portal_headers(org),
        )
        assert log.status_code == 200 and log.json().get("webhookDeliveries", []) == []
        gone = await client.delete(
            f"/portal/billing/v1/webhookEndpoints/{endpoint_id}", headers=portal_headers(org)
        )
        assert gone.status_code == 200, gone.text


async def test_a_send_whose_outcome_was_lost_is_sent_again_after_its_lease(
    payments: Harness, receiver: Receiver
) -> None:
    org = new_id("org")
    ep = await endpoint(payments, org, receiver.url(), ["invoice.paid"])
    receiver.status = 500
    await invoice_paid(payments, org)
    await settled_first_attempts(payments, ep.endpoint_id, 1)
    (x,) = await deliveries(payments, ep.endpoint_id)
    assert x.next_attempt_time is not None
    # A dispatcher leases it and dies before recording anything (crash
    # between the POST and the second transaction).
    due = x.next_attempt_time
    lease = timedelta(minutes=1)
    async with payments.collector.make_uow() as uow:
        (leased,) = await uow.webhooks.lease_due(due, due + lease, 10)
        await uow.commit()
    assert leased[0].delivery_id == x.delivery_id
    # While leased nobody sends it; once the lease is over it is sent again.
    assert await dispatcher(payments).run_once(due + lease / 2) == []
    receiver.status = 200
    (sent,) = await dispatcher(payments).run_once(due + lease * 2)
    assert sent.state is d.DeliveryState.SUCCEEDED and sent.attempt_count == 2
    assert [r.json["id"] for r in receiver.ok()] == [x.delivery_id]
