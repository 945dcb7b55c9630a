"""Events this service consumes, published to NATS as their producers do:
usage aggregates drive entitlement answers; payment outcomes move a
subscription to past_due and back."""

from __future__ import annotations

from datetime import UTC

import pytest
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import payments_events_pb2
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api

from tests.integration.subscriptions.conftest import Catalog
from tests.support.subscriptions import (
    Harness,
    T,
    cancel,
    create,
    details,
    expect_illegal,
    new_id,
    pause,
    resume,
    usage_event,
)

pytestmark = pytest.mark.integration


async def check(
    h: Harness, org: str, feature: str, quantity: str = ""
) -> api.CheckEntitlementResponse:
    return await h.stub.CheckEntitlement(
        api.CheckEntitlementRequest(org_id=org, feature_key=feature, quantity=quantity), timeout=T
    )


async def publish_usage(h: Harness, sub: pb.Subscription, value: str, revision: int) -> None:
    start = sub.current_period_start_time.ToDatetime(tzinfo=UTC)
    end = sub.current_period_end_time.ToDatetime(tzinfo=UTC)
    await h.publish(
        usage_event(sub.subscription_id, sub.org_id, "api_calls", value, start, end, revision),
        sub.subscription_id,
    )


async def test_metered_entitlement_follows_usage_aggregates(
    harness: Harness, catalog: Catalog
) -> None:
    sub = await create(harness, catalog.basic)
    org = sub.org_id
    first = await check(harness, org, "api_calls")
    assert first.allowed
    assert first.reason == api.ENTITLEMENT_REASON_WITHIN_LIMIT
    assert (first.limit, first.used, first.remaining) == ("100", "0", "100")
    assert first.enforcement == catalog_pb2.LIMIT_ENFORCEMENT_HARD
    assert first.subscription_id == sub.subscription_id

    await publish_usage(harness, sub, "95", revision=1)

    async def used_is(value: str) -> bool:
        return (await check(harness, org, "api_calls")).used == value

    await harness.wait_for(lambda: used_is("95"))
    near = await check(harness, org, "api_calls", quantity="5")
    assert near.allowed and near.remaining == "5"
    over = await check(harness, org, "api_calls", quantity="6")
    assert not over.allowed
    assert over.reason == api.ENTITLEMENT_REASON_HARD_LIMIT_EXCEEDED

    # A late, older revision never overwrites a newer total.
    await publish_usage(harness, sub, "120", revision=3)
    await harness.wait_for(lambda: used_is("120"))
    await publish_usage(harness, sub, "10", revision=2)
    marker = await create(harness, catalog.basic)  # the consumer is ordered: wait past it
    await publish_usage(harness, marker, "1", revision=1)

    async def marker_applied() -> bool:
        return (await check(harness, marker.org_id, "api_calls")).used == "1"

    await harness.wait_for(marker_applied)
    exhausted = await check(harness, org, "api_calls")
    assert (exhausted.used, exhausted.remaining, exhausted.allowed) == ("120", "0", False)


async def test_standing_soft_unlimited_and_missing_features(
    harness: Harness, catalog: Catalog
) -> None:
    sub = await create(harness, catalog.basic)
    seats = await check(harness, sub.org_id, "seats", quantity="7")
    assert seats.allowed  # soft: allowed, reported
    assert seats.reason == api.ENTITLEMENT_REASON_SOFT_LIMIT_EXCEEDED
    assert (seats.limit, seats.used, seats.remaining) == ("5", "7", "0")
    assert seats.enforcement == catalog_pb2.LIMIT_ENFORCEMENT_SOFT
    sso = await check(harness, sub.org_id, "sso")
    assert sso.allowed and sso.unlimited and sso.limit == "" and sso.remaining == ""
    missing = await check(harness, sub.org_id, "warp_drive")
    assert not missing.allowed
    assert missing.reason == api.ENTITLEMENT_REASON_FEATURE_NOT_IN_PLAN
    nobody = await check(harness, new_id("org"), "seats")
    assert not nobody.allowed
    assert nobody.reason == api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION
    assert nobody.subscription_id == ""

    # Paused: usage is rejected, so entitlements answer "no active subscription".
    await pause(harness, sub.subscription_id)
    paused = await check(harness, sub.org_id, "seats", quantity="1")
    assert paused.reason == api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION
    await resume(harness, sub.subscription_id)
    assert (await check(harness, sub.org_id, "seats", quantity="1")).allowed


async def test_entitlement_bad_input(harness: Harness) -> None:
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(harness, "", "", quantity="lots")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(details(caught.value)[2]) == {"org_id", "feature_key", "quantity"}


def failed(sub: pb.Subscription, final: bool) -> payments_events_pb2.PaymentFailedEvent:
    return payments_events_pb2.PaymentFailedEvent(
        payment_id=new_id("pay"),
        attempt_id=new_id("att"),
        attempt_number=4 if final else 1,
        final_attempt=final,
        org_id=sub.org_id,
        invoice_id=new_id("inv"),
        subscription_id=sub.subscription_id,
        failure_code="card_declined",
    )


async def state_of(h: Harness, sid: str) -> int:
    reply = await h.stub.GetSubscription(api.GetSubscriptionRequest(subscription_id=sid), timeout=T)
    return reply.subscription.state


async def test_final_payment_failure_is_past_due_and_success_recovers(
    harness: Harness, catalog: Catalog
) -> None:
    sub = await create(harness, catalog.basic)
    sid = sub.subscription_id
    # A retry will follow: nothing changes yet.
    await harness.publish(failed(sub, final=False), sid)
    await harness.publish(failed(sub, final=True), sid)

    async def is_state(state: int) -> bool:
        return await state_of(harness, sid) == state

    await harness.wait_for(lambda: is_state(pb.SUBSCRIPTION_STATE_PAST_DUE))
    # past_due keeps the plan (entitlements still answer) but cannot pause.
    assert (await check(harness, sub.org_id, "seats", quantity="1")).allowed
    await expect_illegal(pause(harness, sid), "past_due")

    await harness.publish(
        payments_events_pb2.PaymentSucceededEvent(
            payment_id=new_id("pay"), org_id=sub.org_id, subscription_id=sid
        ),
        sid,
    )
    await harness.wait_for(lambda: is_state(pb.SUBSCRIPTION_STATE_ACTIVE))

    # past_due -> canceled is legal.
    await harness.publish(failed(sub, final=True), sid)
    await harness.wait_for(lambda: is_state(pb.SUBSCRIPTION_STATE_PAST_DUE))
    done = await cancel(harness, sid)
    assert done.subscription.state == pb.SUBSCRIPTION_STATE_CANCELED

    # Payments for a canceled or unknown subscription change nothing (and
    # do not jam the consumer: the next event is still applied).
    await harness.publish(failed(sub, final=True), sid)
    await harness.publish(
        payments_events_pb2.PaymentFailedEvent(subscription_id="nope", final_attempt=True), "nope"
    )
    other = await create(harness, catalog.basic)
    await harness.publish(failed(other, final=True), other.subscription_id)

    async def other_past_due() -> bool:
        return await state_of(harness, other.subscription_id) == pb.SUBSCRIPTION_STATE_PAST_DUE

    await harness.wait_for(other_past_due)
    assert await state_of(harness, sid) == pb.SUBSCRIPTION_STATE_CANCELED


async def test_a_redelivered_catalog_event_is_applied_once(
    harness: Harness, catalog: Catalog
) -> None:
    # Same event id twice (JetStream dedupe inside its window, the inbox past
    # it): the projection holds the version once and subscribing still works.
    from tally.events.v1 import catalog_events_pb2

    from services.kit.events import EventEnvelope

    event = catalog_events_pb2.PackagePublishedEvent(package_version=catalog.pro)
    envelope = EventEnvelope.wrap(event, aggregate_id=catalog.pro.package_id)
    await harness.bus.publish(envelope)
    await harness.bus.publish(envelope)
    sub = await create(harness, catalog.pro)
    assert sub.package_version_id == catalog.pro.package_version_id
