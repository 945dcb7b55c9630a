"""Demo data for ``tally dev up``: a published package, a subscribed org, some usage.

Everything goes through the services' public gRPC APIs with fixed request ids
and idempotency keys, so a second ``make run`` replays the first seed instead
of adding to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from tally.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as catalog
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from tally.usage.v1 import resources_pb2 as usage
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

DEMO_ORG = "org_demo"
DEMO_CALLS = 120
DEADLINE = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class Seeded:
    org_id: str
    package_code: str
    subscription_id: str
    usage_events: int
    usage_new: int

    def describe(self) -> str:
        return (
            f"org {self.org_id} on package {self.package_code!r}"
            f" (subscription {self.subscription_id}), {self.usage_events} api_calls"
            f" ({self.usage_new} new)"
        )


async def _until_projected(call: Callable[[], Awaitable[T]], seconds: float = 30) -> T:
    """Retry while another service has not yet applied the event it needs."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.25)


def _starter_package(metric_id: str) -> catalog.PackageVersion:
    return catalog.PackageVersion(
        name="Starter",
        description="Demo plan: a monthly base fee and metered API calls",
        currency_code="USD",
        billing_interval=catalog.BILLING_INTERVAL_MONTHLY,
        base_fee_amount="49.00",
        base_fee_timing=catalog.BASE_FEE_TIMING_IN_ADVANCE,
        charges=[
            catalog.Charge(
                metric_id=metric_id,
                graduated=catalog.GraduatedProperties(
                    tiers=[
                        catalog.Tier(up_to="1000", unit_amount="0"),
                        catalog.Tier(up_to="100000", unit_amount="0.002"),
                        catalog.Tier(unit_amount="0.001"),
                    ]
                ),
            )
        ],
        feature_limits=[
            catalog.FeatureLimit(
                feature_key="api_calls",
                limit="100000",
                enforcement=catalog.LIMIT_ENFORCEMENT_SOFT,
                resets_each_period=True,
                metric_code="api_calls",
            ),
            catalog.FeatureLimit(
                feature_key="seats", limit="5", enforcement=catalog.LIMIT_ENFORCEMENT_HARD
            ),
        ],
    )


async def seed_demo(addresses: dict[str, str]) -> Seeded:
    async with (
        grpc.aio.insecure_channel(addresses["catalog"]) as catalog_channel,
        grpc.aio.insecure_channel(addresses["subscriptions"]) as subscriptions_channel,
        grpc.aio.insecure_channel(addresses["usage"]) as usage_channel,
    ):
        catalog_api = catalog_pb2_grpc.CatalogServiceStub(catalog_channel)
        metric = await catalog_api.CreateMetric(
            catalog_pb2.CreateMetricRequest(
                metric=catalog.BillableMetric(
                    code="api_calls", name="API calls", aggregation=catalog.AGGREGATION_COUNT
                ),
                request_id="demo-seed-metric-api_calls",
            ),
            timeout=DEADLINE,
        )
        package = await catalog_api.CreatePackage(
            catalog_pb2.CreatePackageRequest(
                code="starter",
                draft=_starter_package(metric.metric.metric_id),
                request_id="demo-seed-package-starter",
            ),
            timeout=DEADLINE,
        )
        await catalog_api.PublishPackage(
            catalog_pb2.PublishPackageRequest(
                package_id=package.package.package_id, request_id="demo-seed-publish-starter"
            ),
            timeout=DEADLINE,
        )

        subscriptions_api = subscriptions_pb2_grpc.SubscriptionsServiceStub(subscriptions_channel)
        created = await _until_projected(
            lambda: subscriptions_api.CreateSubscription(
                subscriptions_pb2.CreateSubscriptionRequest(
                    org_id=DEMO_ORG,
                    package_id=package.package.package_id,
                    request_id=f"demo-seed-subscription-{DEMO_ORG}",
                ),
                timeout=DEADLINE,
            )
        )

        usage_api = usage_pb2_grpc.UsageServiceStub(usage_channel)
        batch = usage_pb2.RecordUsageBatchRequest(
            events=[
                usage.UsageEvent(
                    org_id=DEMO_ORG, metric_code="api_calls", idempotency_key=f"demo-call-{i}"
                )
                for i in range(DEMO_CALLS)
            ]
        )

        async def record() -> usage_pb2.RecordUsageBatchResponse:
            reply: usage_pb2.RecordUsageBatchResponse = await usage_api.RecordUsageBatch(
                batch, timeout=DEADLINE
            )
            if reply.rejected_count:
                # The usage service has not seen the metric or subscription yet.
                raise _NotYet()
            return reply

        recorded = await _retry_not_yet(record)
        return Seeded(
            DEMO_ORG,
            "starter",
            created.subscription.subscription_id,
            DEMO_CALLS,
            recorded.accepted_count,
        )


class _NotYet(Exception):
    pass


async def _retry_not_yet(call: Callable[[], Awaitable[T]], seconds: float = 30) -> T:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await call()
        except _NotYet:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("usage never learned the demo metric and subscription") from None
        await asyncio.sleep(0.25)
