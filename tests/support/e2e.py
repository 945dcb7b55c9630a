"""The whole suite as separate processes (the ``make run`` launcher) for end-to-end tests.

Tests talk to it only as the real clients do: gRPC to the services, HTTP to
the gateway with tokens signed by the secret the gateway was given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
from tally.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as catalog
from tally.invoicing.v1 import invoicing_pb2_grpc
from tally.payments.v1 import payments_pb2_grpc
from tally.subscriptions.v1 import subscriptions_pb2_grpc
from tally.usage.v1 import usage_pb2_grpc

from services.kit.devstack.suite import Suite, SuitePorts
from services.kit.settings import SERVICE_NAMES
from tests.support.gateway import SECRET

T = TypeVar("T")
TIMEOUT = 10.0
# What a call made during a fault may answer before the service is back.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)

E2E_ENV = {
    "GATEWAY_JWT_HS256_SECRET": SECRET,
    "GATEWAY_RATE_LIMIT_PER_SUBJECT": "100000/minute",
    "GATEWAY_RATE_LIMIT_PER_ORG": "100000/minute",
    # The tests drive the billing clock themselves.
    "SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS": "0",
    "INVOICING_FINALIZE_INTERVAL_SECONDS": "0",
    "USAGE_AGGREGATED_INTERVAL_SECONDS": "0.5",
    "OUTBOX_POLL_SECONDS": "0.2",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "DB_POOL_SIZE": "4",
}


@contextmanager
def running_suite(
    root: Path, api_replicas: dict[str, int] | None = None, **env: str
) -> Iterator[Suite]:
    """Start the suite on free ports under ``root``; stop every process after."""
    suite = Suite(
        root,
        SuitePorts.free(),
        durable=False,
        extra_env={**E2E_ENV, **env},
        api_replicas=dict(api_replicas or {}),
    )
    # A Ctrl-C (or SIGTERM) at any moment stops the suite; a second kills it.
    with suite.started(timeout=120):
        yield suite


@dataclass
class Stubs:
    channels: dict[str, grpc.aio.Channel]

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self.channels["catalog"])

    @property
    def subscriptions(self) -> subscriptions_pb2_grpc.SubscriptionsServiceStub:
        return subscriptions_pb2_grpc.SubscriptionsServiceStub(self.channels["subscriptions"])

    @property
    def usage(self) -> usage_pb2_grpc.UsageServiceStub:
        return usage_pb2_grpc.UsageServiceStub(self.channels["usage"])

    @property
    def invoicing(self) -> invoicing_pb2_grpc.InvoicingServiceStub:
        return invoicing_pb2_grpc.InvoicingServiceStub(self.channels["invoicing"])

    @property
    def payments(self) -> payments_pb2_grpc.PaymentsServiceStub:
        return payments_pb2_grpc.PaymentsServiceStub(self.channels["payments"])


@asynccontextmanager
async def stubs(suite: Suite) -> AsyncIterator[Stubs]:
    channels = {s: grpc.aio.insecure_channel(suite.service_address(s)) for s in SERVICE_NAMES}
    try:
        yield Stubs(channels)
    finally:
        for channel in channels.values():
            await channel.close()


async def retrying(call: Callable[[], Awaitable[T]], seconds: float = 60) -> T:
    """Call until it stops failing for a transient reason (a service restarting)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() not in TRANSIENT or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.3)


async def until(
    attempt: Callable[[], Awaitable[T]], ok: Callable[[T], bool], seconds: float = 30
) -> T:
    """Retry ``attempt`` until ``ok`` holds: projections follow events a moment later."""
    deadline = asyncio.get_running_loop().time() + seconds
    last: Any = None
    while True:
        try:
            last = await attempt()
            if ok(last):
                return last  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError as err:
            retry = TRANSIENT | {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
            if err.code() not in retry:
                raise
            last = err
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {seconds}s; last answer: {last}")
        await asyncio.sleep(0.25)


async def count_metric(api: Stubs, code: str = "api_calls") -> catalog.BillableMetric:
    reply = await api.catalog.CreateMetric(
        catalog_pb2.CreateMetricRequest(
            metric=catalog.BillableMetric(
                code=code, name=code.replace("_", " "), aggregation=catalog.AGGREGATION_COUNT
            ),
            request_id=f"metric-{code}",
        ),
        timeout=TIMEOUT,
    )
    return reply.metric


async def publish(api: Stubs, code: str, draft: catalog.PackageVersion) -> catalog.Package:
    package = (
        await api.catalog.CreatePackage(
            catalog_pb2.CreatePackageRequest(code=code, draft=draft, request_id=f"pkg-{code}"),
            timeout=TIMEOUT,
        )
    ).package
    await api.catalog.PublishPackage(
        catalog_pb2.PublishPackageRequest(
            package_id=package.package_id, request_id=f"publish-{code}"
        ),
        timeout=TIMEOUT,
    )
    return package


def problem(response: httpx.Response) -> dict[str, Any]:
    """The gateway's problem+json body, asserting it is one."""
    assert response.headers.get("content-type", "").startswith("application/problem+json"), (
        response.status_code,
        response.text[:300],
    )
    body: dict[str, Any] = json.loads(response.content)
    return body


async def replay_stripe_webhooks(suite: Suite) -> int:
    """Send every event the Stripe emulator has sent again, twice each, newest first.

    Signed with the suite's webhook secret and posted to the gateway's
    ``/webhooks/stripe``, as Stripe does when it retries: each arrives twice,
    and out of order. Returns how many events were replayed.
    """
    from devtools.stripe_emulator.webhooks import sign

    assert suite.stripe is not None
    async with httpx.AsyncClient(base_url=suite.stripe.api_base, timeout=30) as stripe_http:
        listed = await stripe_http.get(
            "/v1/events",
            params={"limit": 100},
            headers={"Authorization": f"Bearer {suite.stripe.api_key}"},
        )
        assert listed.status_code == 200, listed.text
        events: list[dict[str, Any]] = listed.json()["data"]
    async with httpx.AsyncClient(base_url=suite.gateway_url, timeout=30) as gateway:
        for event in events:  # the list is newest first
            payload = json.dumps(event).encode()
            for _ in range(2):
                r = await gateway.post(
                    "/webhooks/stripe",
                    content=payload,
                    headers={
                        "Stripe-Signature": sign(payload, suite.stripe.webhook_secret),
                        "Content-Type": "application/json",
                    },
                )
                assert r.status_code < 300, (event["type"], r.status_code, r.text)
    return len(events)
