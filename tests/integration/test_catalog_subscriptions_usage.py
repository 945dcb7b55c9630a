"""Three services, one path, only their real APIs and events between them.

The catalog publishes a package; the subscriptions service learns it from
``catalog.package.published`` and subscribes an org; the usage service learns
the metric and the subscription from events and counts usage exactly once;
its throttled ``usage.aggregated`` events turn the entitlement check from
allowed to denied at the hard limit. Nothing is seeded behind a service's back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import pytest
from tally.catalog.v1 import catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as catalog
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from tally.usage.v1 import resources_pb2 as usage
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from services.kit import migrations
from tests.support.catalog import publish_per_call_package
from tests.support.services import service_in_process

pytestmark = pytest.mark.integration

T = TypeVar("T")
TIMEOUT = 5


async def eventually(
    attempt: Callable[[], Awaitable[T]], ok: Callable[[T], bool], seconds: float = 20
) -> T:
    """Retry ``attempt`` until ``ok`` holds: projections follow events, a moment later."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            result = await attempt()
            if ok(result):
                return result
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
            result = None  # type: ignore[assignment]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {seconds}s; last answer: {result}")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def suite(database_url: str, nats_url: str) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    for service in ("catalog", "subscriptions", "usage"):
        await migrations.upgrade_async(service, database_url)
    mp = pytest.MonkeyPatch()
    mp.setenv("USAGE_AGGREGATED_INTERVAL_SECONDS", "0.2")
    try:
        async with (
            service_in_process("catalog", database_url, nats_url, outbox_poll_seconds=0.05) as c,
            service_in_process(
                "subscriptions", database_url, nats_url, outbox_poll_seconds=0.05
            ) as s,
            service_in_process("usage", database_url, nats_url, outbox_poll_seconds=0.05) as u,
        ):
            channels = {
                name: grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}")
                for name, rt in (("catalog", c), ("subscriptions", s), ("usage", u))
            }
            yield channels
            for channel in channels.values():
                await channel.close()
    finally:
        mp.undo()


async def test_published_package_to_subscription_to_usage_to_entitlement(
    suite: dict[str, grpc.aio.Channel],
) -> None:
    catalog_api = catalog_pb2_grpc.CatalogServiceStub(suite["catalog"])
    subscriptions_api = subscriptions_pb2_grpc.SubscriptionsServiceStub(suite["subscriptions"])
    usage_api = usage_pb2_grpc.UsageServiceStub(suite["usage"])
    org = f"org_{uuid.uuid4().hex[:8]}"

    # 1. Admin: a count metric and a package with a hard limit of 3 calls a period.
    _, package = await publish_per_call_package(
        catalog_api,
        unit_amount="0.001",
        timeout=TIMEOUT,
        trial_days=0,
        feature_limits=[
            catalog.FeatureLimit(
                feature_key="api_calls",
                limit="3",
                enforcement=catalog.LIMIT_ENFORCEMENT_HARD,
                resets_each_period=True,
                metric_code="api_calls",
            )
        ],
    )

    # 2. Portal: org subscribes once the subscriptions service has seen the publish.
    created = await eventually(
        lambda: subscriptions_api.CreateSubscription(
            subscriptions_pb2.CreateSubscriptionRequest(
                org_id=org, package_id=package.package_id, request_id=f"sub-{org}"
            ),
            timeout=TIMEOUT,
        ),
        lambda reply: bool(reply.subscription.subscription_id),
    )
    subscription_id = created.subscription.subscription_id

    async def check(quantity: str) -> subscriptions_pb2.CheckEntitlementResponse:
        reply: subscriptions_pb2.CheckEntitlementResponse = (
            await subscriptions_api.CheckEntitlement(
                subscriptions_pb2.CheckEntitlementRequest(
                    org_id=org, feature_key="api_calls", quantity=quantity
                ),
                timeout=TIMEOUT,
            )
        )
        return reply

    before = await check("1")
    assert before.allowed
    assert before.subscription_id == subscription_id

    # 3. Product code: three calls, one of them sent twice. Usage learns the
    # metric and the subscription from events; until then it rejects, and a
    # rejected event is not stored, so sending again is safe.
    events = [
        usage.UsageEvent(org_id=org, metric_code="api_calls", idempotency_key=f"call-{i}")
        for i in (1, 2, 3)
    ]
    batch = usage_pb2.RecordUsageBatchRequest(events=[*events, events[1]])
    reply = await eventually(
        lambda: usage_api.RecordUsageBatch(batch, timeout=TIMEOUT),
        lambda r: all(res.status != usage.USAGE_EVENT_STATUS_REJECTED for res in r.results),
    )
    statuses = [r.status for r in reply.results]
    assert statuses.count(usage.USAGE_EVENT_STATUS_DUPLICATE) >= 1
    again = await usage_api.RecordUsageBatch(batch, timeout=TIMEOUT)
    assert {r.status for r in again.results} == {usage.USAGE_EVENT_STATUS_DUPLICATE}

    # 4. usage.aggregated reaches subscriptions: 3 used of 3, the next call is denied.
    after = await eventually(lambda: check("1"), lambda r: r.used == "3")
    assert not after.allowed
    assert after.limit == "3"
    assert after.remaining == "0"
    assert after.enforcement == catalog.LIMIT_ENFORCEMENT_HARD
