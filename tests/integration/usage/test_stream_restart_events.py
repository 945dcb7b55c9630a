"""StreamUsage acknowledgements, exactly once across a service restart, and the
throttled usage.aggregated events through the outbox."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from nats.aio.msg import Msg
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import catalog_events_pb2, usage_events_pb2
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api

from services.kit import migrations
from services.kit.bus import EventBus
from tests.support.usage import aggregate, event, eventually, record_batch, uid, usage_stack

pytestmark = pytest.mark.integration

INTERVAL = 1.5


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> AsyncIterator[str]:
    await migrations.upgrade_async("usage", database_url)
    previous = os.environ.get("USAGE_AGGREGATED_INTERVAL_SECONDS")
    os.environ["USAGE_AGGREGATED_INTERVAL_SECONDS"] = str(INTERVAL)
    yield database_url
    if previous is None:
        os.environ.pop("USAGE_AGGREGATED_INTERVAL_SECONDS", None)
    else:
        os.environ["USAGE_AGGREGATED_INTERVAL_SECONDS"] = previous


async def test_stream_acknowledges_each_batch_with_its_problems(
    migrated: str, nats_url: str
) -> None:
    async with usage_stack(migrated, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        org = uid("org")
        sub, _, _ = await seeder.subscription(org)

        async def requests() -> AsyncIterator[usage_api.StreamUsageRequest]:
            for seq in range(1, 6):
                events = [event(org, "api_calls", f"s{seq}-{i}") for i in range(100)]
                events.append(event(org, "api_calls", f"s{seq - 1}-0"))  # dup of previous batch
                events.append(event(org, "nope", f"bad-{seq}"))
                yield usage_api.StreamUsageRequest(sequence=seq, events=events)

        acks = [ack async for ack in stub.StreamUsage(requests(), timeout=30)]
        assert [a.acked_sequence for a in acks] == [1, 2, 3, 4, 5]
        last = acks[-1]
        assert (
            last.total_accepted_count,
            last.total_duplicate_count,
            last.total_rejected_count,
        ) == (501, 4, 5)  # batch 1 "repeats" s0-0, which is new
        second = acks[1].batches[0]
        assert (second.sequence, second.accepted_count, second.duplicate_count) == (2, 100, 1)
        assert {(p.idempotency_key, p.status) for p in second.problems} == {
            ("s1-0", usage_pb2.USAGE_EVENT_STATUS_DUPLICATE),
            ("bad-2", usage_pb2.USAGE_EVENT_STATUS_REJECTED),
        }
        assert await aggregate(stub, sub, "api_calls") == (Decimal(501), 501)

        # A resumed stream resends after its last ack; sequence must increase.
        async def bad() -> AsyncIterator[usage_api.StreamUsageRequest]:
            yield usage_api.StreamUsageRequest(sequence=3, events=[event(org, "api_calls", "z")])
            yield usage_api.StreamUsageRequest(sequence=3, events=[event(org, "api_calls", "y")])

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.StreamUsage(bad(), timeout=10):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_duplicates_across_a_restart_count_once(migrated: str, nats_url: str) -> None:
    org = uid("org")
    events = [event(org, "bytes_sent", f"r{i}", "2") for i in range(200)]
    async with usage_stack(migrated, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        sub, _, _ = await seeder.subscription(org)
        assert (await record_batch(stub, events[:150])).accepted_count == 150
    async with usage_stack(migrated, nats_url) as (_runtime, stub, _seeder, _bus):
        reply = await record_batch(stub, events)
        assert (reply.accepted_count, reply.duplicate_count) == (50, 150)
        assert await aggregate(stub, sub, "bytes_sent") == (Decimal(400), 200)


async def test_aggregated_events_are_throttled_and_carry_the_total(
    migrated: str, nats_url: str
) -> None:
    async with usage_stack(migrated, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        org = uid("org")
        sub, _, _ = await seeder.subscription(org)
        seen: list[usage_events_pb2.UsageAggregatedEvent] = []

        async def collect(msg: Msg) -> None:
            parsed = usage_events_pb2.UsageAggregatedEvent.FromString(msg.data)
            if parsed.aggregate.subscription_id == sub:
                seen.append(parsed)

        watcher = await EventBus.connect(nats_url, name="aggregated-watch")
        subscription = await watcher.js.subscribe(
            "tally.usage.usage.aggregated", cb=collect, ordered_consumer=True
        )
        try:
            started = asyncio.get_running_loop().time()
            for i in range(10):
                await record_batch(stub, [event(org, "api_calls", f"t{i}-{j}") for j in range(5)])
            await eventually(
                lambda: _has_total(seen, "50"), timeout=INTERVAL * 4, what="total of 50 emitted"
            )
            elapsed = asyncio.get_running_loop().time() - started
            # At most one event per interval (plus the first), never one per batch.
            assert len(seen) <= int(elapsed / INTERVAL) + 2, (len(seen), elapsed)
            assert len(seen) < 10
            revisions = [e.revision for e in seen]
            assert revisions == sorted(revisions)
            assert seen[-1].aggregate.metric_code == "api_calls"
            assert seen[-1].aggregate.event_count == 50
            # Nothing changes: nothing more is emitted.
            count = len(seen)
            await asyncio.sleep(INTERVAL * 1.5)
            assert len(seen) == count
        finally:
            await subscription.unsubscribe()
            await watcher.close()


async def _has_total(seen: list[usage_events_pb2.UsageAggregatedEvent], total: str) -> bool:
    return bool(seen) and seen[-1].aggregate.value == total


async def test_threshold_crossed_once_per_feature_limit_and_period(
    migrated: str, nats_url: str
) -> None:
    async with usage_stack(migrated, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        version = uid("pv")
        limits = [
            catalog_pb2.FeatureLimit(
                feature_key="api", limit="10", metric_code="api_calls", resets_each_period=True
            ),
            catalog_pb2.FeatureLimit(
                feature_key="api-hard", limit="20", metric_code="api_calls", resets_each_period=True
            ),
            catalog_pb2.FeatureLimit(feature_key="seats", limit="1", unlimited=True),
        ]
        await seeder.publish(
            catalog_events_pb2.PackagePublishedEvent(
                package_version=catalog_pb2.PackageVersion(
                    package_version_id=version, feature_limits=limits
                )
            ),
            version,
        )
        org = uid("org")
        await eventually(
            lambda: seeder._has(
                "SELECT count(*) = 2 FROM usage.feature_threshold WHERE package_version_id = $1",
                version,
            ),
            what="thresholds projected",
        )
        sub, _, _ = await seeder.subscription(org, package_version_id=version)
        crossed: list[usage_events_pb2.UsageThresholdCrossedEvent] = []

        async def collect(msg: Msg) -> None:
            parsed = usage_events_pb2.UsageThresholdCrossedEvent.FromString(msg.data)
            if parsed.aggregate.subscription_id == sub:
                crossed.append(parsed)

        watcher = await EventBus.connect(nats_url, name="threshold-watch")
        subscription = await watcher.js.subscribe(
            "tally.usage.usage.threshold_crossed", cb=collect, ordered_consumer=True
        )
        try:
            await record_batch(stub, [event(org, "api_calls", f"a{i}") for i in range(8)])
            await asyncio.sleep(INTERVAL * 1.5)
            assert crossed == []
            await record_batch(stub, [event(org, "api_calls", f"b{i}") for i in range(5)])
            await eventually(lambda: _count(crossed, 1), timeout=INTERVAL * 4, what="crossing")
            assert (crossed[0].feature_key, crossed[0].threshold) == ("api", "10")
            assert crossed[0].aggregate.value == "13"
            await record_batch(stub, [event(org, "api_calls", f"c{i}") for i in range(10)])
            await eventually(lambda: _count(crossed, 2), timeout=INTERVAL * 4, what="second")
            assert (crossed[1].feature_key, crossed[1].aggregate.value) == ("api-hard", "23")
            await record_batch(stub, [event(org, "api_calls", f"d{i}") for i in range(10)])
            await asyncio.sleep(INTERVAL * 2)
            assert len(crossed) == 2  # each threshold once per period
        finally:
            await subscription.unsubscribe()
            await watcher.close()


async def _count(items: list[usage_events_pb2.UsageThresholdCrossedEvent], n: int) -> bool:
    return len(items) >= n
