"""The subscriptions API over a real grpc.aio channel, against real PostgreSQL
and NATS: create, read, list, the lifecycle transitions, plan changes,
schedules, and the events each step emits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from tally.events.v1 import subscriptions_events_pb2 as ev
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api

from services.kit.protoconv import to_timestamp
from tests.integration.subscriptions.conftest import Catalog
from tests.support.subscriptions import Harness, T, create, details, new_id

pytestmark = pytest.mark.integration


async def test_create_subscription_pins_the_version_and_emits_created(
    harness: Harness, catalog: Catalog
) -> None:
    before = datetime.now(UTC)
    sub = await create(harness, package_id=catalog.basic.package_id)
    assert sub.state == pb.SUBSCRIPTION_STATE_ACTIVE
    assert sub.package_version_id == catalog.basic.package_version_id
    assert (sub.package_code, sub.package_version, sub.currency_code) == ("basic", 1, "USD")
    start = sub.start_time.ToDatetime(tzinfo=UTC)
    assert start >= before - timedelta(seconds=1)
    # Calendar anchor: the first period is partial, up to the next 1st.
    end = sub.current_period_end_time.ToDatetime(tzinfo=UTC)
    assert (end.day, end.hour, end.minute) == (1, 0, 0)
    assert sub.current_period_start_time == sub.start_time

    events = await harness.wait_events(sub.subscription_id, ["created"])
    created = events[0][1]
    assert isinstance(created, ev.SubscriptionCreatedEvent)
    assert created.subscription.package_version_id == catalog.basic.package_version_id

    got = await harness.stub.GetSubscription(
        api.GetSubscriptionRequest(subscription_id=sub.subscription_id), timeout=T
    )
    assert got.subscription == sub


async def test_trial_from_the_package_or_overridden(harness: Harness, catalog: Catalog) -> None:
    trialing = await create(harness, catalog.trial)
    assert trialing.state == pb.SUBSCRIPTION_STATE_TRIALING
    trial_end = trialing.trial_end_time.ToDatetime(tzinfo=UTC)
    assert trial_end - trialing.start_time.ToDatetime(tzinfo=UTC) == timedelta(days=14)

    no_trial = await create(harness, catalog.trial, trial_days=0)
    assert no_trial.state == pb.SUBSCRIPTION_STATE_ACTIVE
    assert not no_trial.HasField("trial_end_time")


async def test_anniversary_anchor_and_backdated_start(harness: Harness, catalog: Catalog) -> None:
    start = datetime(2024, 1, 31, 9, 30, tzinfo=UTC)
    sub = await create(
        harness,
        catalog.basic,
        billing_anchor=pb.BILLING_ANCHOR_ANNIVERSARY,
        start_time=to_timestamp(start),
    )
    assert sub.current_period_start_time.ToDatetime(tzinfo=UTC) == start
    # Jan 31 + 1 month is the last day of February (leap year).
    assert sub.current_period_end_time.ToDatetime(tzinfo=UTC) == datetime(
        2024, 2, 29, 9, 30, tzinfo=UTC
    )


async def test_second_live_subscription_is_already_exists_and_leaves_nothing(
    harness: Harness, catalog: Catalog
) -> None:
    org = new_id("org")
    first = await create(harness, catalog.basic, org_id=org)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(harness, catalog.basic, org_id=org)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    reason, meta, _ = details(caught.value)
    assert reason == "SUBSCRIPTION_ALREADY_EXISTS"
    assert meta["org_id"] == org

    listed = await harness.stub.ListSubscriptions(
        api.ListSubscriptionsRequest(org_id=org), timeout=T
    )
    assert [s.subscription_id for s in listed.subscriptions] == [first.subscription_id]

    # Explicitly allowed, a second one exists alongside.
    second = await create(harness, catalog.basic, org_id=org, allow_multiple=True)
    listed = await harness.stub.ListSubscriptions(
        api.ListSubscriptionsRequest(org_id=org), timeout=T
    )
    assert {s.subscription_id for s in listed.subscriptions} == {
        first.subscription_id,
        second.subscription_id,
    }


async def test_concurrent_creates_for_one_org_make_one_subscription(
    harness: Harness, catalog: Catalog
) -> None:
    import asyncio

    org = new_id("org")
    results = await asyncio.gather(
        *(create(harness, catalog.starter, org_id=org) for _ in range(4)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, pb.Subscription)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert all(f.code() == grpc.StatusCode.ALREADY_EXISTS for f in failed)
    assert len(failed) == 3


async def test_bad_input_gets_every_field_violation(harness: Harness, catalog: Catalog) -> None:
    future = datetime.now(UTC) + timedelta(days=3)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.CreateSubscription(
            api.CreateSubscriptionRequest(
                org_id="",
                package_id="",
                trial_days=-1,
                billing_anchor=99,  # type: ignore[arg-type]
                start_time=to_timestamp(future),
            ),
            timeout=T,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, _, fields = details(caught.value)
    assert reason == "INVALID_ARGUMENT"
    assert set(fields) == {"org_id", "package_id", "trial_days", "billing_anchor", "start_time"}


async def test_unknown_package_unpublished_version_and_archived_package(
    harness: Harness, catalog: Catalog
) -> None:
    org = new_id("org")
    cases = [
        ({"package_id": "no-such-package"}, grpc.StatusCode.NOT_FOUND, "PACKAGE_NOT_FOUND"),
        (
            {"package_id": catalog.basic.package_id, "package_version_id": "pv-never-published"},
            grpc.StatusCode.NOT_FOUND,
            "PACKAGE_VERSION_NOT_FOUND",
        ),
        (
            # A version of another package is not a version of this one.
            {
                "package_id": catalog.basic.package_id,
                "package_version_id": catalog.pro.package_version_id,
            },
            grpc.StatusCode.NOT_FOUND,
            "PACKAGE_VERSION_NOT_FOUND",
        ),
        (
            {"package_id": catalog.archived.package_id},
            grpc.StatusCode.FAILED_PRECONDITION,
            "PACKAGE_ARCHIVED",
        ),
    ]
    for fields, code, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await harness.stub.CreateSubscription(
                api.CreateSubscriptionRequest(org_id=org, **fields),  # type: ignore[arg-type]
                timeout=T,
            )
        assert caught.value.code() == code, fields
        assert details(caught.value)[0] == expected
    listed = await harness.stub.ListSubscriptions(
        api.ListSubscriptionsRequest(org_id=org), timeout=T
    )
    assert list(listed.subscriptions) == []


async def test_request_id_replays_the_first_answer(harness: Harness, catalog: Catalog) -> None:
    org = new_id("org")
    request = api.CreateSubscriptionRequest(
        org_id=org, package_id=catalog.basic.package_id, request_id=new_id("req")
    )
    first = await harness.stub.CreateSubscription(request, timeout=T)
    again = await harness.stub.CreateSubscription(request, timeout=T)
    assert again == first
    listed = await harness.stub.ListSubscriptions(
        api.ListSubscriptionsRequest(org_id=org), timeout=T
    )
    assert len(listed.subscriptions) == 1
    await harness.wait_events(first.subscription.subscription_id, ["created"])

    # The same request id for a different request is refused.
    other = api.CreateSubscriptionRequest(
        org_id=new_id("org"), package_id=catalog.basic.package_id, request_id=request.request_id
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.CreateSubscription(other, timeout=T)
    assert details(caught.value)[0] == "REQUEST_ID_REUSED"


async def test_get_of_another_org_is_not_found(harness: Harness, catalog: Catalog) -> None:
    sub = await create(harness, catalog.basic)
    for request in (
        api.GetSubscriptionRequest(subscription_id=sub.subscription_id, org_id="someone-else"),
        api.GetSubscriptionRequest(subscription_id="no-such-subscription"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await harness.stub.GetSubscription(request, timeout=T)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(caught.value)[0] == "SUBSCRIPTION_NOT_FOUND"


async def test_list_paginates_newest_first_with_filters(harness: Harness, catalog: Catalog) -> None:
    org = new_id("org")
    made = [await create(harness, catalog.basic, org_id=org, allow_multiple=True) for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await harness.stub.ListSubscriptions(
            api.ListSubscriptionsRequest(org_id=org, page_size=2, page_token=token), timeout=T
        )
        assert len(page.subscriptions) <= 2
        seen += [s.subscription_id for s in page.subscriptions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [s.subscription_id for s in reversed(made)]

    filtered = await harness.stub.ListSubscriptions(
        api.ListSubscriptionsRequest(org_id=org, state=pb.SUBSCRIPTION_STATE_CANCELED), timeout=T
    )
    assert list(filtered.subscriptions) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ListSubscriptions(
            api.ListSubscriptionsRequest(org_id="other", page_token=token or "garbage"),
            timeout=T,
        )
    assert "page_token" in details(caught.value)[2]
