"""Usage ingestion over real gRPC, PostgreSQL and NATS: each event counted once,
every aggregation right, rejections explicit and never blocking valid events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from services.kit import migrations
from tests.support.usage import Seeder, aggregate, event, record_batch, uid, usage_stack

pytestmark = pytest.mark.integration

ACCEPTED = usage_pb2.USAGE_EVENT_STATUS_ACCEPTED
DUPLICATE = usage_pb2.USAGE_EVENT_STATUS_DUPLICATE
REJECTED = usage_pb2.USAGE_EVENT_STATUS_REJECTED


@pytest.fixture(scope="module")
async def stack(
    database_url: str, nats_url: str
) -> AsyncIterator[tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder]]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (runtime, stub, seeder, _bus):
        await seeder.metrics()
        yield runtime, stub, seeder


@pytest.fixture
def stub(
    stack: tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder],
) -> usage_pb2_grpc.UsageServiceStub:
    return stack[1]


@pytest.fixture
def seeder(stack: tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder]) -> Seeder:
    return stack[2]


async def test_duplicates_within_and_across_batches_count_once(
    stub: usage_pb2_grpc.UsageServiceStub, seeder: Seeder
) -> None:
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    first = await record_batch(
        stub, [event(org, "api_calls", k) for k in ["a", "b", "a", "c", "b"]]
    )
    assert [r.status for r in first.results] == [ACCEPTED, ACCEPTED, DUPLICATE, ACCEPTED, DUPLICATE]
    assert (first.accepted_count, first.duplicate_count, first.rejected_count) == (3, 2, 0)
    assert [r.index for r in first.results] == [0, 1, 2, 3, 4]

    second = await record_batch(stub, [event(org, "api_calls", k) for k in ["c", "d", "a"]])
    assert [r.status for r in second.results] == [DUPLICATE, ACCEPTED, DUPLICATE]
    assert await aggregate(stub, sub, "api_calls") == (Decimal(4), 4)

    # The same key in another org is another event.
    other = uid("org")
    other_sub, _, _ = await seeder.subscription(other)
    third = await record_batch(stub, [event(other, "api_calls", "a")])
    assert third.results[0].status == ACCEPTED
    assert await aggregate(stub, sub, "api_calls") == (Decimal(4), 4)
    assert await aggregate(stub, other_sub, "api_calls") == (Decimal(1), 1)


async def test_every_aggregation_gives_the_right_figure(
    stub: usage_pb2_grpc.UsageServiceStub, seeder: Seeder
) -> None:
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    now = datetime.now(UTC).replace(microsecond=0)
    t = [now - timedelta(hours=h) for h in range(5, 0, -1)]  # oldest first
    events = [
        event(org, "api_calls", "c1", at=t[0]),
        event(org, "api_calls", "c2", "99", at=t[1]),  # a value on a count is ignored
        event(org, "bytes_sent", "s1", "10.5", at=t[0]),
        event(org, "bytes_sent", "s2", "0.25", at=t[1]),
        # value from the metric's property when `value` is empty (CloudEvents style)
        event(org, "bytes_sent", "s3", at=t[2], properties={"bytes": "4"}),
        event(org, "peak_seats", "m1", "3", at=t[0]),
        event(org, "peak_seats", "m2", "7", at=t[1]),
        event(org, "peak_seats", "m3", "5", at=t[2]),
        event(org, "active_users", "u1", properties={"user_id": "ann"}),
        event(org, "active_users", "u2", properties={"user_id": "bob"}),
        event(org, "active_users", "u3", properties={"user_id": "ann"}),
        # latest: the greatest event_time wins, whatever the arrival order
        event(org, "balance", "l1", "30", at=t[3]),
        event(org, "balance", "l2", "10", at=t[0]),
        event(org, "balance", "l3", "20", at=t[2]),
    ]
    reply = await record_batch(stub, events)
    assert reply.accepted_count == len(events), reply
    # A later batch with an older "latest" changes nothing; a newer one wins.
    await record_batch(
        stub,
        [
            event(org, "balance", "l4", "99", at=t[1]),
            event(org, "active_users", "u4", properties={"user_id": "bob"}),
            event(org, "active_users", "u5", properties={"user_id": "cy"}),
            event(org, "peak_seats", "m4", "6", at=t[3]),
        ],
    )
    assert await aggregate(stub, sub, "api_calls") == (Decimal(2), 2)
    assert await aggregate(stub, sub, "bytes_sent") == (Decimal("14.75"), 3)
    assert await aggregate(stub, sub, "peak_seats") == (Decimal(7), 4)
    assert await aggregate(stub, sub, "active_users") == (Decimal(3), 5)
    assert await aggregate(stub, sub, "balance") == (Decimal(30), 4)
    await record_batch(stub, [event(org, "balance", "l5", "12.5", at=t[4])])
    assert await aggregate(stub, sub, "balance") == (Decimal("12.5"), 5)

    # Equal timestamps: the greater idempotency key is the latest.
    await record_batch(
        stub,
        [
            event(org, "balance", "z-tie", "1", at=t[4]),
            event(org, "balance", "a-tie", "2", at=t[4]),
        ],
    )
    assert await aggregate(stub, sub, "balance") == (Decimal(1), 7)

    values = await stub.GetAggregate(
        usage_api.GetAggregateRequest(
            subscription_id=sub, metric_code="bytes_sent", include_event_values=True
        ),
        timeout=10,
    )
    assert list(values.event_values) == ["10.5", "0.25", "4"]
    assert values.aggregate.org_id == org and not values.aggregate.frozen


async def test_a_mixed_batch_stores_the_valid_and_reports_each_rejection(
    stub: usage_pb2_grpc.UsageServiceStub, seeder: Seeder, caplog: pytest.LogCaptureFixture
) -> None:
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    future = datetime.now(UTC) + timedelta(minutes=10)
    events = [
        event(org, "api_calls", "ok-1"),
        event(org, "no_such_metric", "bad-metric"),
        event(org, "bytes_sent", "bad-value", "twelve"),
        event(org, "bytes_sent", "no-value"),
        event(org, "bytes_sent", "negative", "-1"),
        event(org, "api_calls", "future", at=future),
        event(org, "active_users", "no-property"),
        event(org, "api_calls", "x" * 129),
        event(org, "api_calls", ""),
        event(uid("org"), "api_calls", "unknown-org"),
        event(org, "api_calls", "bad-sub", subscription_id="sub-nope"),
        event(org, "bytes_sent", "ok-2", "1.5", subscription_id=sub),
        event(org, "api_calls", "ok-3", at=datetime.now(UTC) + timedelta(minutes=4)),
    ]
    with caplog.at_level(logging.WARNING, logger="services.usage.ingest"):
        reply = await record_batch(stub, events)
    got = {r.idempotency_key[:20]: (r.status, r.reason) for r in reply.results}
    R = usage_pb2
    assert got == {
        "ok-1": (ACCEPTED, 0),
        "bad-metric": (REJECTED, R.USAGE_REJECTION_REASON_UNKNOWN_METRIC),
        "bad-value": (REJECTED, R.USAGE_REJECTION_REASON_INVALID_VALUE),
        "no-value": (REJECTED, R.USAGE_REJECTION_REASON_INVALID_VALUE),
        "negative": (REJECTED, R.USAGE_REJECTION_REASON_NEGATIVE_VALUE),
        "future": (REJECTED, R.USAGE_REJECTION_REASON_FUTURE_TIMESTAMP),
        "no-property": (REJECTED, R.USAGE_REJECTION_REASON_MISSING_PROPERTY),
        "x" * 20: (REJECTED, R.USAGE_REJECTION_REASON_INVALID_IDEMPOTENCY_KEY),
        "": (REJECTED, R.USAGE_REJECTION_REASON_INVALID_IDEMPOTENCY_KEY),
        "unknown-org": (REJECTED, R.USAGE_REJECTION_REASON_NO_ACTIVE_SUBSCRIPTION),
        "bad-sub": (REJECTED, R.USAGE_REJECTION_REASON_UNKNOWN_SUBSCRIPTION),
        "ok-2": (ACCEPTED, 0),
        "ok-3": (ACCEPTED, 0),
    }
    assert (reply.accepted_count, reply.rejected_count) == (3, 10)
    assert all(r.message for r in reply.results if r.status == REJECTED)
    assert await aggregate(stub, sub, "api_calls") == (Decimal(2), 2)
    assert await aggregate(stub, sub, "bytes_sent") == (Decimal("1.5"), 1)
    drops = [r for r in caplog.records if r.getMessage().startswith("billing_usage_event_drop")]
    assert len(drops) == 10
    assert any("reason=UNKNOWN_METRIC event_id=bad-metric" in r.getMessage() for r in drops)


async def test_two_connections_racing_with_overlapping_batches_count_once(
    stack: tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    runtime, _, seeder = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    keys = [f"k{i}" for i in range(600)]
    # Overlapping, in different orders, small (unnest) and large (COPY) batches.
    batches = [keys[0:400], list(reversed(keys[200:600])), keys[100:500:2], keys[0:10]]

    async def send(batch: list[str]) -> usage_api.RecordUsageBatchResponse:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            own = usage_pb2_grpc.UsageServiceStub(channel)
            events = [event(org, "bytes_sent", k, "1") for k in batch]
            return await record_batch(own, events)

    for _round in range(3):
        replies = await asyncio.gather(*(send(b) for b in batches))
        assert all(r.rejected_count == 0 for r in replies)
    accepted = sum(r.accepted_count for r in replies)
    assert accepted == 0  # the last round found everything stored
    assert await aggregate(stub_of(stack), sub, "bytes_sent") == (Decimal(600), 600)


def stub_of(
    stack: tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder],
) -> usage_pb2_grpc.UsageServiceStub:
    return stack[1]


async def test_concurrent_first_sends_accept_each_key_exactly_once(
    stack: tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    runtime, stub, seeder = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    keys = [f"k{i}" for i in range(300)]

    async def send(batch: list[str]) -> usage_api.RecordUsageBatchResponse:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            own = usage_pb2_grpc.UsageServiceStub(channel)
            return await record_batch(own, [event(org, "api_calls", k) for k in batch])

    replies = await asyncio.gather(
        send(keys), send(list(reversed(keys))), send(keys[::3]), send(keys[50:60])
    )
    accepted_keys = [
        r.idempotency_key for reply in replies for r in reply.results if r.status == ACCEPTED
    ]
    assert sorted(accepted_keys) == sorted(keys)  # each accepted by exactly one call
    assert await aggregate(stub, sub, "api_calls") == (Decimal(300), 300)


async def test_batch_limits_and_single_record(
    stub: usage_pb2_grpc.UsageServiceStub, seeder: Seeder
) -> None:
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await record_batch(stub, [event(org, "api_calls", f"k{i}") for i in range(1001)])
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await record_batch(stub, [])
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    full = await record_batch(stub, [event(org, "api_calls", f"k{i}") for i in range(1000)])
    assert full.accepted_count == 1000

    one = await stub.RecordUsage(
        usage_api.RecordUsageRequest(event=event(org, "api_calls", "single")), timeout=10
    )
    assert one.result.status == ACCEPTED
    again = await stub.RecordUsage(
        usage_api.RecordUsageRequest(event=event(org, "api_calls", "single")), timeout=10
    )
    assert again.result.status == DUPLICATE
    assert await aggregate(stub, sub, "api_calls") == (Decimal(1001), 1001)


async def test_request_id_replays_the_first_answer(
    stub: usage_pb2_grpc.UsageServiceStub, seeder: Seeder
) -> None:
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    events = [event(org, "api_calls", "r1"), event(org, "api_calls", "r2")]
    first = await record_batch(stub, events, request_id="req-1")
    replay = await record_batch(stub, events, request_id="req-1")
    assert first == replay and first.accepted_count == 2
    fresh = await record_batch(stub, events)
    assert fresh.duplicate_count == 2
    assert await aggregate(stub, sub, "api_calls") == (Decimal(2), 2)
