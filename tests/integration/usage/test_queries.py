"""Reads over real gRPC: time series buckets, the event explorer's pagination,
a period's aggregates, and backfill repairing a drifted aggregate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from services.kit import migrations
from tests.support.usage import Seeder, event, record_batch, ts, uid, usage_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(
    database_url: str, nats_url: str
) -> AsyncIterator[tuple[usage_pb2_grpc.UsageServiceStub, Seeder, str]]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        yield stub, seeder, database_url


async def test_query_usage_buckets_by_hour_and_day(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder, str],
) -> None:
    stub, seeder, _ = stack
    org = uid("org")
    await seeder.subscription(org)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    await record_batch(
        stub,
        [
            event(org, "bytes_sent", "a", "1.5", at=hour + timedelta(minutes=5)),
            event(org, "bytes_sent", "b", "2", at=hour + timedelta(minutes=59)),
            event(org, "bytes_sent", "c", "4", at=hour + timedelta(hours=2, minutes=1)),
            event(org, "active_users", "u1", at=hour, properties={"user_id": "ann"}),
            event(org, "active_users", "u2", at=hour, properties={"user_id": "ann"}),
            event(org, "active_users", "u3", at=hour, properties={"user_id": "bob"}),
        ],
    )
    reply = await stub.QueryUsage(
        usage_api.QueryUsageRequest(
            org_id=org,
            metric_code="bytes_sent",
            start_time=ts(hour + timedelta(minutes=30)),  # truncated to the hour
            end_time=ts(hour + timedelta(hours=4)),
            bucket=usage_pb2.TIME_BUCKET_HOUR,
        ),
        timeout=10,
    )
    assert [(b.start_time.ToDatetime(UTC), b.value, b.event_count) for b in reply.buckets] == [
        (hour, "3.5", 2),
        (hour + timedelta(hours=1), "0", 0),
        (hour + timedelta(hours=2), "4", 1),
        (hour + timedelta(hours=3), "0", 0),
    ]
    unique = await stub.QueryUsage(
        usage_api.QueryUsageRequest(
            org_id=org,
            metric_code="active_users",
            start_time=ts(hour),
            end_time=ts(hour + timedelta(hours=1)),
            bucket=usage_pb2.TIME_BUCKET_HOUR,
        ),
        timeout=10,
    )
    assert [(b.value, b.event_count) for b in unique.buckets] == [("2", 3)]
    day = hour.replace(hour=0)
    daily = await stub.QueryUsage(
        usage_api.QueryUsageRequest(
            org_id=org,
            metric_code="bytes_sent",
            start_time=ts(hour),
            end_time=ts(day + timedelta(days=2)),
        ),
        timeout=10,
    )
    assert len(daily.buckets) == 2
    assert daily.buckets[0].start_time.ToDatetime(UTC) == day
    assert sum(b.event_count for b in daily.buckets) == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.QueryUsage(
            usage_api.QueryUsageRequest(
                org_id=org,
                metric_code="bytes_sent",
                start_time=ts(hour),
                end_time=ts(hour + timedelta(days=91)),
                bucket=usage_pb2.TIME_BUCKET_HOUR,
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_events_pages_newest_first(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder, str],
) -> None:
    stub, seeder, _ = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    # Pairs share a timestamp, so the tie-break on keys is exercised.
    events = [
        event(org, "bytes_sent", f"e{i:02d}", str(i), at=base + timedelta(seconds=i // 2))
        for i in range(25)
    ]
    await record_batch(stub, events)
    await record_batch(stub, [event(org, "api_calls", "other-metric")])
    keys: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListEvents(
            usage_api.ListEventsRequest(
                org_id=org, metric_code="bytes_sent", page_size=7, page_token=token
            ),
            timeout=10,
        )
        pages += 1
        keys += [e.event.idempotency_key for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert pages == 4
    expected = sorted(
        (f"e{i:02d}" for i in range(25)), key=lambda k: (int(k[1:]) // 2, k), reverse=True
    )
    assert keys == expected
    first = (
        await stub.ListEvents(
            usage_api.ListEventsRequest(org_id=org, idempotency_key="e03"), timeout=10
        )
    ).events[0]
    assert first.event.value == "3" and first.event.subscription_id == sub
    assert first.receive_time.seconds > 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListEvents(
            usage_api.ListEventsRequest(org_id=uid("org"), page_size=7, page_token=token or "x"),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_aggregates_of_a_period(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder, str],
) -> None:
    stub, seeder, _ = stack
    org = uid("org")
    sub, start, end = await seeder.subscription(org)
    await record_batch(
        stub,
        [
            event(org, "api_calls", "a"),
            event(org, "bytes_sent", "b", "3"),
            event(org, "peak_seats", "c", "9"),
        ],
    )
    first = await stub.ListAggregates(
        usage_api.ListAggregatesRequest(subscription_id=sub, page_size=2), timeout=10
    )
    second = await stub.ListAggregates(
        usage_api.ListAggregatesRequest(
            subscription_id=sub, page_size=2, page_token=first.next_page_token
        ),
        timeout=10,
    )
    assert [a.metric_code for a in [*first.aggregates, *second.aggregates]] == [
        "api_calls",
        "bytes_sent",
        "peak_seats",
    ]
    assert not second.next_page_token
    assert first.aggregates[0].period_start_time.ToDatetime(UTC) == start
    assert first.aggregates[0].period_end_time.ToDatetime(UTC) == end
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListAggregates(
            usage_api.ListAggregatesRequest(subscription_id=sub, org_id="someone-else"),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    nothing = await stub.GetAggregate(
        usage_api.GetAggregateRequest(subscription_id=sub, metric_code="balance"), timeout=10
    )
    assert (nothing.aggregate.value, nothing.aggregate.event_count) == ("0", 0)


async def test_backfill_reports_and_repairs_drift_but_never_touches_frozen(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder, str],
) -> None:
    stub, seeder, database_url = stack
    org = uid("org")
    now = datetime.now(UTC).replace(microsecond=0)
    old_start, old_end = now - timedelta(days=40), now - timedelta(days=10)
    sub, _, _ = await seeder.subscription(org, start=old_start, end=old_end)
    await record_batch(
        stub,
        [event(org, "bytes_sent", f"o{i}", "1", at=old_end - timedelta(days=1)) for i in range(3)],
    )
    await seeder.close_period(sub, org, old_start, old_end, next_end=now + timedelta(days=20))
    await record_batch(
        stub,
        [event(org, "bytes_sent", f"n{i}", "2", at=now - timedelta(hours=1)) for i in range(4)]
        + [
            event(org, "active_users", f"u{i}", properties={"user_id": f"x{i % 2}"})
            for i in range(4)
        ],
    )
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE usage.usage_aggregate SET value = value + 100, event_count = 99"
            " WHERE subscription_id = $1 AND metric_code = 'bytes_sent'",
            sub,
        )
    finally:
        await conn.close()

    def request(dry_run: bool, request_id: str = "") -> usage_api.BackfillUsageRequest:
        return usage_api.BackfillUsageRequest(
            org_id=org,
            start_time=ts(old_start),
            end_time=ts(now + timedelta(days=1)),
            dry_run=dry_run,
            request_id=request_id,
        )

    dry = await stub.BackfillUsage(request(True), timeout=10)
    assert dry.events_scanned == 11 and dry.aggregates_checked == 3
    changes = {(c.period_start_time.ToDatetime(UTC), c.metric_code): c for c in dry.changes}
    assert set(changes) == {(old_start, "bytes_sent"), (old_end, "bytes_sent")}
    frozen = changes[(old_start, "bytes_sent")]
    assert (frozen.old_value, frozen.new_value, frozen.frozen) == ("103", "3", True)
    live = changes[(old_end, "bytes_sent")]
    assert (live.old_value, live.new_value, live.old_event_count, live.new_event_count) == (
        "108",
        "8",
        99,
        4,
    )
    current = usage_api.GetAggregateRequest(subscription_id=sub, metric_code="bytes_sent")
    assert (await stub.GetAggregate(current, timeout=10)).aggregate.value == "108"  # dry run

    done = await stub.BackfillUsage(request(False, "bf-1"), timeout=10)
    assert len(done.changes) == 2
    assert (await stub.GetAggregate(current, timeout=10)).aggregate.value == "8"
    closed = usage_api.GetAggregateRequest(
        subscription_id=sub, metric_code="bytes_sent", period_start_time=ts(old_start)
    )
    assert (await stub.GetAggregate(closed, timeout=10)).aggregate.value == "103"
    again = await stub.BackfillUsage(request(False), timeout=10)
    assert [c.frozen for c in again.changes] == [True]  # only the frozen drift remains
    # Ingestion continues incrementally from the repaired figure.
    await record_batch(stub, [event(org, "bytes_sent", "after", "1")])
    assert (await stub.GetAggregate(current, timeout=10)).aggregate.value == "9"
