"""The rejection feed through gRPC: every event that does not count is kept
once with its reason, listed per org with paging and filters, counted on
/metrics and announced by ``usage.event_rejected``; an out-of-range
event_time rejects that event alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
import pytest
from nats.aio.msg import Msg
from tally.events.v1 import usage_events_pb2
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from services.kit import migrations
from services.kit.bus import EventBus
from services.kit.protoconv import MAX_TIMESTAMP_SECONDS
from services.kit.runtime import ServiceRuntime
from services.usage.domain.rejections import MAX_PAYLOAD_CHARS
from tests.support.metrics import scrape, value
from tests.support.usage import Seeder, aggregate, event, eventually, record_batch, ts, uid
from tests.support.usage import usage_stack as _usage_stack

pytestmark = pytest.mark.integration

R = usage_pb2
ACCEPTED = R.USAGE_EVENT_STATUS_ACCEPTED
DUPLICATE = R.USAGE_EVENT_STATUS_DUPLICATE
REJECTED = R.USAGE_EVENT_STATUS_REJECTED
Stack = tuple[ServiceRuntime, usage_pb2_grpc.UsageServiceStub, Seeder, str]
# Three batches of these: more than one announcing round (500 rows) in all.
PER_BATCH = 200


@pytest.fixture(scope="module")
async def stack(database_url: str, nats_url: str) -> AsyncIterator[Stack]:
    await migrations.upgrade_async("usage", database_url)
    async with _usage_stack(database_url, nats_url) as (runtime, stub, seeder, _bus):
        await seeder.metrics()
        yield runtime, stub, seeder, database_url


def _bad_time(e: usage_pb2.UsageEvent) -> usage_pb2.UsageEvent:
    e.event_time.seconds = MAX_TIMESTAMP_SECONDS + 1
    return e


async def _feed(
    stub: usage_pb2_grpc.UsageServiceStub, org: str, **kw: Any
) -> list[usage_pb2.RejectedUsageEvent]:
    """Every page of the org's feed, following the tokens."""
    found: list[usage_pb2.RejectedUsageEvent] = []
    token = ""
    while True:
        reply = await stub.ListRejectedEvents(
            usage_api.ListRejectedEventsRequest(org_id=org, page_token=token, **kw), timeout=10
        )
        found.extend(reply.rejected_events)
        token = reply.next_page_token
        if not token:
            return found


async def _closed_world(seeder: Seeder) -> tuple[str, str, datetime]:
    """An org whose first period is closed; returns (org, subscription, a closed instant)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start, closed_end, open_end = (
        now - timedelta(days=40),
        now - timedelta(days=10),
        now + timedelta(days=20),
    )
    org = uid("org")
    sub, _, _ = await seeder.subscription(org, start=start, end=closed_end)
    await seeder.close_period(sub, org, start, closed_end, open_end)
    await seeder.wait_period(sub, closed_end)
    return org, sub, start + timedelta(days=1)


async def test_every_reason_lands_once_and_a_retry_is_listed_once(stack: Stack) -> None:
    _runtime, stub, seeder, database_url = stack
    org, sub, closed_at = await _closed_world(seeder)
    now = datetime.now(UTC)
    batch = [
        event(org, "api_calls", "ok-1"),
        event(org, "no_such_metric", "r-metric"),
        event(org, "api_calls", "r-sub", subscription_id="sub-missing"),
        event(org, "bytes_sent", "r-value", "abc"),
        event(org, "bytes_sent", "r-negative", "-2"),
        event(org, "api_calls", "r-future", at=now + timedelta(days=1)),
        event(org, "api_calls", "r-closed", at=closed_at),
        event(org, "api_calls", "x" * 200),
        event(org, "active_users", "r-property"),
        _bad_time(event(org, "api_calls", "r-time")),
        # Far in the past: before any period of the org.
        event(org, "api_calls", "r-before", at=now - timedelta(days=400)),
    ]
    reply = await record_batch(stub, batch)
    statuses = [(r.idempotency_key[:10], r.status, r.reason) for r in reply.results]
    expected = [
        ("ok-1", ACCEPTED, 0),
        ("r-metric", REJECTED, R.USAGE_REJECTION_REASON_UNKNOWN_METRIC),
        ("r-sub", REJECTED, R.USAGE_REJECTION_REASON_UNKNOWN_SUBSCRIPTION),
        ("r-value", REJECTED, R.USAGE_REJECTION_REASON_INVALID_VALUE),
        ("r-negative", REJECTED, R.USAGE_REJECTION_REASON_NEGATIVE_VALUE),
        ("r-future", REJECTED, R.USAGE_REJECTION_REASON_FUTURE_TIMESTAMP),
        ("r-closed", REJECTED, R.USAGE_REJECTION_REASON_PERIOD_CLOSED),
        ("x" * 10, REJECTED, R.USAGE_REJECTION_REASON_INVALID_IDEMPOTENCY_KEY),
        ("r-property", REJECTED, R.USAGE_REJECTION_REASON_MISSING_PROPERTY),
        ("r-time", REJECTED, R.USAGE_REJECTION_REASON_INVALID_EVENT_TIME),
        ("r-before", REJECTED, R.USAGE_REJECTION_REASON_NO_ACTIVE_SUBSCRIPTION),
    ]
    assert statuses == expected
    assert await aggregate(stub, sub, "api_calls") == (Decimal(1), 1)

    feed = await _feed(stub, org)
    wanted = sorted((key, reason) for key, status, reason in expected if status == REJECTED)
    assert sorted((r.idempotency_key[:10], r.reason) for r in feed) == wanted
    by_key = {r.idempotency_key: r for r in feed}
    assert by_key["x" * 128].reason == R.USAGE_REJECTION_REASON_INVALID_IDEMPOTENCY_KEY
    value_row = by_key["r-value"]
    assert value_row.metric_code == "bytes_sent" and value_row.org_id == org
    assert "abc" in value_row.message
    assert json.loads(value_row.payload_json)["value"] == "abc"
    assert not by_key["r-time"].HasField("event_time")
    assert by_key["r-future"].event_time.ToDatetime(tzinfo=UTC) > now
    assert all(r.HasField("reject_time") for r in feed)

    # The same batch again: the accepted one is a duplicate, the rejections
    # answer rejected again but the feed keeps each once.
    again = await record_batch(stub, batch)
    assert [r.status for r in again.results] == [DUPLICATE] + [REJECTED] * 10
    assert len(await _feed(stub, org)) == 10
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM usage.rejected_event WHERE org_id = $1", org
        )
    finally:
        await conn.close()
    assert rows == 10


async def test_an_event_without_a_valid_key_is_kept_once_per_payload(stack: Stack) -> None:
    _runtime, stub, _seeder, _db = stack
    org = uid("org")
    same = [event(org, "api_calls", ""), event(org, "api_calls", "")]
    other = event(org, "bytes_sent", "", "1")
    reply = await record_batch(stub, [*same, other])
    assert [r.status for r in reply.results] == [REJECTED] * 3
    await record_batch(stub, same)
    feed = await _feed(stub, org)
    assert sorted(r.metric_code for r in feed) == ["api_calls", "bytes_sent"]


async def test_a_huge_event_is_kept_bounded(stack: Stack) -> None:
    _runtime, stub, _seeder, _db = stack
    org = uid("org")
    await record_batch(stub, [event(org, "nope", "big", properties={"blob": "y" * 50_000})])
    [row] = await _feed(stub, org)
    assert len(row.payload_json) <= MAX_PAYLOAD_CHARS
    kept = json.loads(row.payload_json)
    assert kept["truncated"] is True and kept["size"] > 50_000
    assert kept["idempotency_key"] == "big" and "properties" not in kept


async def test_an_out_of_range_time_rejects_that_event_not_its_batch(stack: Stack) -> None:
    _runtime, stub, seeder, _db = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    bad_nanos = event(org, "api_calls", "t-nanos", at=datetime.now(UTC))
    bad_nanos.event_time.nanos = -1
    batch = [
        event(org, "api_calls", "t-1"),
        _bad_time(event(org, "api_calls", "t-2")),
        event(org, "api_calls", "t-3", at=datetime.now(UTC)),
        bad_nanos,
    ]
    reply = await record_batch(stub, batch)
    assert [r.status for r in reply.results] == [ACCEPTED, REJECTED, ACCEPTED, REJECTED]
    assert reply.results[1].reason == R.USAGE_REJECTION_REASON_INVALID_EVENT_TIME
    assert "event_time" in reply.results[1].message
    assert await aggregate(stub, sub, "api_calls") == (Decimal(2), 2)

    # RecordUsage and StreamUsage go the same way: an answer, not INVALID_ARGUMENT.
    single = await stub.RecordUsage(
        usage_api.RecordUsageRequest(event=_bad_time(event(org, "api_calls", "t-single"))),
        timeout=10,
    )
    assert single.result.status == REJECTED

    async def requests() -> AsyncIterator[usage_api.StreamUsageRequest]:
        yield usage_api.StreamUsageRequest(
            sequence=1,
            events=[event(org, "api_calls", "t-s1"), _bad_time(event(org, "api_calls", "t-s2"))],
        )

    [ack] = [a async for a in stub.StreamUsage(requests(), timeout=10)]
    assert (ack.batches[0].accepted_count, ack.batches[0].rejected_count) == (1, 1)
    assert ack.batches[0].problems[0].reason == R.USAGE_REJECTION_REASON_INVALID_EVENT_TIME

    feed = await _feed(stub, org)
    assert sorted(r.idempotency_key for r in feed) == ["t-2", "t-nanos", "t-s2", "t-single"]

    # omit_accepted_results still answers the problems only.
    short = await record_batch(
        stub,
        [event(org, "api_calls", "t-4"), _bad_time(event(org, "api_calls", "t-5"))],
        omit_accepted_results=True,
    )
    assert [(r.index, r.status) for r in short.results] == [(1, REJECTED)]
    assert (short.accepted_count, short.rejected_count) == (1, 1)


async def test_the_feed_pages_and_filters(stack: Stack) -> None:
    _runtime, stub, _seeder, _db = stack
    org = uid("org")
    await record_batch(stub, [event(org, f"m{i}", f"k{i}") for i in range(5)])
    await record_batch(stub, [event(org, "bytes_sent", "v1", "abc")])
    first = await stub.ListRejectedEvents(
        usage_api.ListRejectedEventsRequest(org_id=org, page_size=2), timeout=10
    )
    assert len(first.rejected_events) == 2 and first.next_page_token
    every = await _feed(stub, org, page_size=2)
    keys = [r.idempotency_key for r in every]
    # Newest first: the later batch, then the first batch in reverse.
    assert keys == ["v1", "k4", "k3", "k2", "k1", "k0"]
    assert keys[:2] == [r.idempotency_key for r in first.rejected_events]

    unknown = await _feed(stub, org, reason=R.USAGE_REJECTION_REASON_UNKNOWN_METRIC)
    assert len(unknown) == 5
    invalid = await _feed(stub, org, reason=R.USAGE_REJECTION_REASON_INVALID_VALUE)
    assert [r.idempotency_key for r in invalid] == ["v1"]
    assert [r.idempotency_key for r in await _feed(stub, org, metric_code="m3")] == ["k3"]
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await _feed(stub, org, start_time=ts(later)) == []
    assert len(await _feed(stub, org, end_time=ts(later))) == 6
    earlier = datetime.now(UTC) - timedelta(hours=1)
    assert await _feed(stub, org, end_time=ts(earlier)) == []
    # Another org's feed is its own.
    assert await _feed(stub, uid("org")) == []

    # A token is bound to its filters; a bad one and a missing org are refused.
    for request in (
        usage_api.ListRejectedEventsRequest(org_id=org, page_token="junk"),
        usage_api.ListRejectedEventsRequest(
            org_id=org, metric_code="m1", page_token=first.next_page_token
        ),
        usage_api.ListRejectedEventsRequest(),
        usage_api.ListRejectedEventsRequest(org_id=org, reason=99),  # type: ignore[arg-type]
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListRejectedEvents(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rejections_are_announced_in_few_events_and_counted(
    stack: Stack, nats_url: str
) -> None:
    runtime, stub, _seeder, _db = stack
    assert runtime.http is not None
    url = f"http://127.0.0.1:{runtime.http.port}"
    org = uid("org")
    seen: list[usage_events_pb2.UsageEventRejectedEvent] = []

    async def collect(msg: Msg) -> None:
        parsed = usage_events_pb2.UsageEventRejectedEvent.FromString(msg.data)
        if parsed.org_id == org:
            seen.append(parsed)

    watcher = await EventBus.connect(nats_url, name="rejected-watch")
    subscription = await watcher.js.subscribe(
        "tally.usage.usage.event_rejected", cb=collect, ordered_consumer=True
    )
    try:
        before = await scrape(url)
        batches = 3
        for b in range(batches):
            await record_batch(
                stub, [event(org, "no_such_metric", f"f{b}-{i}") for i in range(PER_BATCH)]
            )
        await record_batch(stub, [_bad_time(event(org, "api_calls", "f-time"))])
        after = await scrape(url)
        dropped = "billing_usage_dropped_total"
        assert (
            value(after, dropped, reason="UNKNOWN_METRIC")
            - value(before, dropped, reason="UNKNOWN_METRIC")
            == batches * PER_BATCH
        )
        assert (
            value(after, dropped, reason="INVALID_EVENT_TIME")
            - value(before, dropped, reason="INVALID_EVENT_TIME")
            == 1
        )

        async def all_announced() -> bool:
            return sum(len(e.rejected_events) for e in seen) >= batches * PER_BATCH + 1

        await eventually(all_announced, timeout=20, what="every rejection announced")
        await asyncio.sleep(1.5)  # a second announcement of the same rows would arrive by now
        keys = [r.idempotency_key for e in seen for r in e.rejected_events]
        assert sorted(keys) == sorted(
            [f"f{b}-{i}" for b in range(batches) for i in range(PER_BATCH)] + ["f-time"]
        )
        # Batched per org and round, never one message per rejection.
        assert len(seen) <= 2 * (batches + 1), len(seen)
        assert all(r.payload_json == "" for e in seen for r in e.rejected_events)
        assert {r.reason for e in seen for r in e.rejected_events} == {
            R.USAGE_REJECTION_REASON_UNKNOWN_METRIC,
            R.USAGE_REJECTION_REASON_INVALID_EVENT_TIME,
        }
    finally:
        await subscription.unsubscribe()
        await watcher.close()
