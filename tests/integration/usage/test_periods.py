"""Billing periods through subscriptions events: closing freezes aggregates and
turns late events away, pauses stop usage, org-level events find the right
subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tally.events.v1 import subscriptions_events_pb2
from tally.subscriptions.v1 import resources_pb2 as subscriptions_pb2
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from services.kit import migrations
from tests.support.usage import Seeder, event, record_batch, ts, uid, usage_stack

pytestmark = pytest.mark.integration

ACCEPTED = usage_pb2.USAGE_EVENT_STATUS_ACCEPTED
DUPLICATE = usage_pb2.USAGE_EVENT_STATUS_DUPLICATE
REJECTED = usage_pb2.USAGE_EVENT_STATUS_REJECTED
R = usage_pb2


@pytest.fixture(scope="module")
async def stack(
    database_url: str, nats_url: str
) -> AsyncIterator[tuple[usage_pb2_grpc.UsageServiceStub, Seeder]]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        yield stub, seeder


async def _aggregate(
    stub: usage_pb2_grpc.UsageServiceStub, sub: str, metric: str, start: datetime | None = None
) -> Any:
    request = usage_api.GetAggregateRequest(subscription_id=sub, metric_code=metric)
    if start is not None:
        request.period_start_time.CopyFrom(ts(start))
    return (await stub.GetAggregate(request, timeout=10)).aggregate


async def test_closing_a_period_freezes_it_and_rejects_late_events(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    stub, seeder = stack
    org = uid("org")
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(days=30), now - timedelta(hours=1)
    sub, _, _ = await seeder.subscription(org, start=start, end=end)
    in_period = end - timedelta(days=1)
    # The period is over but not closed yet: late usage still counts in it,
    # and so does usage after its end until the close announces the next one.
    reply = await record_batch(
        stub,
        [
            event(org, "bytes_sent", "e1", "5", at=in_period),
            event(org, "bytes_sent", "e2", "2", at=now),
        ],
    )
    assert reply.accepted_count == 2
    before = await _aggregate(stub, sub, "bytes_sent", start)
    assert (before.value, before.event_count, before.frozen) == ("7", 2, False)

    await seeder.close_period(sub, org, start, end, next_end=end + timedelta(days=30))
    frozen = await _aggregate(stub, sub, "bytes_sent", start)
    assert (frozen.value, frozen.frozen) == ("7", True)

    reply = await record_batch(
        stub,
        [
            event(org, "bytes_sent", "late", "100", at=in_period),
            event(org, "bytes_sent", "e1", "5", at=in_period),  # a retry of a stored event
            event(org, "bytes_sent", "next", "3", at=now),  # the new period takes it
        ],
    )
    assert [(r.status, r.reason) for r in reply.results] == [
        (REJECTED, R.USAGE_REJECTION_REASON_PERIOD_CLOSED),
        (DUPLICATE, 0),
        (ACCEPTED, 0),
    ]
    assert (await _aggregate(stub, sub, "bytes_sent", start)).value == "7"
    current = await _aggregate(stub, sub, "bytes_sent", end)
    assert (current.value, current.frozen) == ("3", False)
    # Redelivering the close changes nothing (inbox); the aggregate stays frozen.
    await seeder.close_period(sub, org, start, end)
    assert (await _aggregate(stub, sub, "bytes_sent", start)).value == "7"


async def test_paused_subscription_takes_no_usage_after_the_pause(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    stub, seeder = stack
    org = uid("org")
    sub, start, end = await seeder.subscription(org)
    pause = datetime.now(UTC) - timedelta(hours=1)
    await seeder.paused(sub, org, start, end, pause)
    reply = await record_batch(
        stub,
        [
            event(org, "api_calls", "before-pause", at=pause - timedelta(minutes=5)),
            event(org, "api_calls", "while-paused"),
            event(org, "api_calls", "explicit", subscription_id=sub),
        ],
    )
    assert [(r.status, r.reason) for r in reply.results] == [
        (ACCEPTED, 0),
        (REJECTED, R.USAGE_REJECTION_REASON_NO_ACTIVE_SUBSCRIPTION),
        (REJECTED, R.USAGE_REJECTION_REASON_NO_ACTIVE_SUBSCRIPTION),
    ]
    assert (await _aggregate(stub, sub, "api_calls")).event_count == 1


async def test_org_events_go_to_the_subscription_active_at_their_time(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    stub, seeder = stack
    org = uid("org")
    now = datetime.now(UTC).replace(microsecond=0)
    switch = now - timedelta(days=2)
    old_sub, old_start, _ = await seeder.subscription(
        org, start=now - timedelta(days=20), end=now + timedelta(days=10)
    )
    # The old subscription is canceled at `switch`; a new one starts then.
    canceled = seeder.subscription_message(
        old_sub,
        org,
        old_start,
        now + timedelta(days=10),
        state=subscriptions_pb2.SUBSCRIPTION_STATE_CANCELED,
    )
    await seeder.publish(
        subscriptions_events_pb2.SubscriptionCanceledEvent(
            subscription_id=old_sub,
            org_id=org,
            effective_time=ts(switch),
            subscription=canceled,
        ),
        old_sub,
    )
    new_sub, _, _ = await seeder.subscription(org, start=switch, end=switch + timedelta(days=30))
    reply = await record_batch(
        stub,
        [
            event(org, "api_calls", "old-1", at=switch - timedelta(hours=3)),
            event(org, "api_calls", "new-1", at=switch + timedelta(hours=3)),
            event(org, "api_calls", "new-2"),
        ],
    )
    assert reply.accepted_count == 3
    assert (await _aggregate(stub, old_sub, "api_calls", old_start)).event_count == 1
    assert (await _aggregate(stub, new_sub, "api_calls")).event_count == 2
    events = await stub.ListEvents(
        usage_api.ListEventsRequest(org_id=org, idempotency_key="old-1"), timeout=10
    )
    assert [e.event.subscription_id for e in events.events] == [old_sub]


async def test_archived_metric_and_unknown_subscription(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    stub, seeder = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    await seeder.metric("legacy_calls", "count")
    assert (await record_batch(stub, [event(org, "legacy_calls", "a")])).accepted_count == 1
    await seeder.metric("legacy_calls", "count", archived=True)
    reply = await record_batch(stub, [event(org, "legacy_calls", "b")])
    assert reply.results[0].reason == R.USAGE_REJECTION_REASON_UNKNOWN_METRIC
    other_org = uid("org")
    await seeder.subscription(other_org)
    reply = await record_batch(stub, [event(other_org, "api_calls", "x", subscription_id=sub)])
    assert reply.results[0].reason == R.USAGE_REJECTION_REASON_UNKNOWN_SUBSCRIPTION


async def test_a_close_racing_with_ingestion_freezes_exactly_what_was_stored(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    stub, seeder = stack
    org = uid("org")
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(days=30), now - timedelta(hours=1)
    sub, _, _ = await seeder.subscription(org, start=start, end=end)
    at = end - timedelta(days=1)
    outcomes: list[Any] = []
    some_stored = asyncio.Event()

    async def producer(name: str) -> None:
        # Keep sending until the close is seen, so the race always happens.
        for b in range(400):
            reply = await record_batch(
                stub, [event(org, "bytes_sent", f"{name}-{b}-{i}", "1", at=at) for i in range(50)]
            )
            outcomes.extend(reply.results)
            if sum(1 for r in outcomes if r.status == ACCEPTED) >= 300:
                some_stored.set()
            if reply.rejected_count:
                return

    async def closer() -> None:
        await some_stored.wait()
        await seeder.close_period(sub, org, start, end, next_end=now + timedelta(days=29))

    await asyncio.gather(producer("a"), producer("b"), closer())
    accepted = sum(1 for r in outcomes if r.status == ACCEPTED)
    closed = [r for r in outcomes if r.status == REJECTED]
    assert all(r.reason == R.USAGE_REJECTION_REASON_PERIOD_CLOSED for r in closed)
    assert accepted + len(closed) == len(outcomes)
    assert accepted >= 300 and closed  # both sides of the race happened
    frozen = await _aggregate(stub, sub, "bytes_sent", start)
    assert frozen.frozen
    # Every stored event is in the frozen figure, and nothing else is.
    assert (frozen.value, frozen.event_count) == (str(accepted), accepted)
    listed = await stub.ListEvents(
        usage_api.ListEventsRequest(org_id=org, page_size=1000), timeout=10
    )
    stored = len(listed.events)
    token = listed.next_page_token
    while token:
        page = await stub.ListEvents(
            usage_api.ListEventsRequest(org_id=org, page_size=1000, page_token=token), timeout=10
        )
        stored += len(page.events)
        token = page.next_page_token
    assert stored == accepted
