"""The billing services in-process, wired to each other as in production, and
the money path's set-up through their real APIs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import grpc
import pytest
from tally.catalog.v1 import catalog_pb2_grpc
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from services.kit import migrations
from services.kit.protoconv import to_timestamp
from services.kit.runtime import ServiceRuntime
from tests.integration.test_catalog_subscriptions_usage import eventually
from tests.support.catalog import publish_per_call_package
from tests.support.services import service_in_process

TIMEOUT = 5
SERVICES = ("catalog", "subscriptions", "usage", "invoicing")


@dataclass
class Suite:
    runtimes: dict[str, ServiceRuntime]
    channels: dict[str, grpc.aio.Channel]

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.runtimes[service].port}"

    def http_url(self, service: str) -> str:
        http = self.runtimes[service].http
        assert http is not None
        return f"http://127.0.0.1:{http.port}"


@asynccontextmanager
async def billing_suite(database_url: str, nats_url: str) -> AsyncIterator[Suite]:
    """Catalog, subscriptions, usage and invoicing; the clock moves only when told."""
    for service in SERVICES:
        await migrations.upgrade_async(service, database_url)
    mp = pytest.MonkeyPatch()
    mp.setenv("USAGE_AGGREGATED_INTERVAL_SECONDS", "0.2")
    mp.setenv("SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS", "0")
    mp.setenv("INVOICING_FINALIZE_INTERVAL_SECONDS", "0")
    fast = {"outbox_poll_seconds": 0.05}
    try:
        async with (
            service_in_process("catalog", database_url, nats_url, **fast) as c,
            service_in_process("subscriptions", database_url, nats_url, **fast) as s,
            service_in_process("usage", database_url, nats_url, **fast) as u,
        ):
            mp.setenv("INVOICING_USAGE_ADDR", f"127.0.0.1:{u.port}")
            mp.setenv("INVOICING_SUBSCRIPTIONS_ADDR", f"127.0.0.1:{s.port}")
            async with service_in_process("invoicing", database_url, nats_url, **fast) as i:
                runtimes = {"catalog": c, "subscriptions": s, "usage": u, "invoicing": i}
                channels = {
                    name: grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}")
                    for name, rt in runtimes.items()
                }
                try:
                    yield Suite(runtimes, channels)
                finally:
                    for channel in channels.values():
                        await channel.close()
    finally:
        mp.undo()


async def subscribed_org(
    suite: Suite, start: datetime, metric_code: str = "api_calls"
) -> tuple[str, str]:
    """A published package with one per-call charge and a new org subscribed to it
    from ``start``; returns the org and subscription ids."""
    catalog_api = catalog_pb2_grpc.CatalogServiceStub(suite.channels["catalog"])
    subscriptions_api = subscriptions_pb2_grpc.SubscriptionsServiceStub(
        suite.channels["subscriptions"]
    )
    org = f"org_{uuid.uuid4().hex[:8]}"
    _, package = await publish_per_call_package(
        catalog_api,
        metric_code=metric_code,
        metric_name=metric_code,
        package_code=f"starter_{org}",
        metric_request_id=f"metric-{metric_code}",
        timeout=TIMEOUT,
    )
    created = await eventually(
        lambda: subscriptions_api.CreateSubscription(
            subscriptions_pb2.CreateSubscriptionRequest(
                org_id=org,
                package_id=package.package_id,
                start_time=to_timestamp(start),
                request_id=f"sub-{org}",
            ),
            timeout=TIMEOUT,
        ),
        lambda reply: bool(reply.subscription.subscription_id),
    )
    return org, str(created.subscription.subscription_id)
