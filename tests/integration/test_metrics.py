"""``/metrics`` on a service's HTTP port moves with the traffic it serves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tally.usage.v1 import usage_pb2_grpc

from services.kit.runtime import ServiceRuntime
from tests.support.metrics import Samples, has, scrape, value
from tests.support.usage import Seeder, event, record_batch, uid, usage_stack

pytestmark = pytest.mark.integration

USAGE_CONSUMERS = ("usage-catalog", "usage-subscriptions")


@pytest.fixture(scope="module")
async def stack(
    database_url: str, nats_url: str
) -> AsyncIterator[tuple[ServiceRuntime, usage_pb2_grpc.UsageServiceStub, Seeder]]:
    from services.kit import migrations

    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (runtime, stub, seeder, _):
        await seeder.metrics()
        yield runtime, stub, seeder


def _url(runtime: ServiceRuntime) -> str:
    assert runtime.http is not None
    return f"http://127.0.0.1:{runtime.http.port}"


async def _scrape_until(url: str, ready: Any, seconds: float = 10) -> Samples:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        samples = await scrape(url)
        if ready(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.2)


async def test_named_metrics_move_after_traffic(
    stack: tuple[ServiceRuntime, usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    runtime, stub, seeder = stack
    url = _url(runtime)
    org = uid("org")
    await seeder.subscription(org)

    before = await scrape(url)
    reply = await record_batch(
        stub,
        [
            event(org, "api_calls", uid("k")),
            event(org, "api_calls", uid("k")),
            event(org, "no_such_metric", uid("k")),
        ],
    )
    assert [r.status for r in reply.results].count(1) == 2  # two accepted
    after = await scrape(url)

    processed = "billing_usage_processed_total"
    assert (
        value(after, processed, status="accepted") - value(before, processed, status="accepted")
        == 2
    )
    dropped = "billing_usage_dropped_total"
    assert (
        value(after, dropped, reason="UNKNOWN_METRIC")
        - value(before, dropped, reason="UNKNOWN_METRIC")
        == 1
    )
    calls = "rpc_server_duration_milliseconds_count"
    batch = {"rpc_method": "RecordUsageBatch", "service": "usage", "rpc_grpc_status_code": "OK"}
    assert value(after, calls, **batch) - value(before, calls, **batch) == 1


async def test_queue_and_pool_gauges_are_exported(
    stack: tuple[ServiceRuntime, usage_pb2_grpc.UsageServiceStub, Seeder],
) -> None:
    runtime, _, _ = stack

    def ready(samples: Samples) -> bool:
        return all(
            has(samples, "billing_consumer_pending", service="usage", consumer=c)
            for c in USAGE_CONSUMERS
        )

    samples = await _scrape_until(_url(runtime), ready)
    assert ready(samples), sorted({name for name, _ in samples})
    for gauge in ("billing_consumer_ack_pending", "billing_consumer_redelivered"):
        assert has(samples, gauge, service="usage", consumer="usage-subscriptions")
    assert has(samples, "billing_outbox_backlog", service="usage")
    assert value(samples, "billing_db_pool_size", service="usage") == runtime.settings.db_pool_size
    assert has(samples, "billing_db_pool_in_use", service="usage")
