"""The data a benchmark needs, built through the services' public gRPC APIs.

One count metric, one published monthly package rating it (a base fee, a
graduated usage charge, a soft limit on it for CheckEntitlement) and one
subscription per organisation. Readiness of the other services' projections
is read from their tables: the bench owns the database it started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg  # type: ignore[import-untyped]
import grpc
import nats
from tally.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as catalog
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from services.kit.settings import SERVICE_NAMES

METRIC = "bench_calls"
FEATURE = "bench_calls"
DEADLINE = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    metric_code: str
    package_id: str


@dataclass(frozen=True)
class Subscribed:
    org_id: str
    subscription_id: str
    period_start: datetime
    period_end: datetime


def org_id(index: int) -> str:
    return f"bench-org-{index:06d}"


async def until_projected(call: Callable[[], Awaitable[T]], seconds: float = 60) -> T:
    """Retry while the callee has not applied the event it needs yet."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            retry = err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
            if not retry or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


def _package() -> catalog.PackageVersion:
    return catalog.PackageVersion(
        name="Bench",
        currency_code="USD",
        billing_interval=catalog.BILLING_INTERVAL_MONTHLY,
        base_fee_amount="29.00",
        base_fee_timing=catalog.BASE_FEE_TIMING_IN_ARREARS,
        charges=[
            catalog.Charge(
                metric_id="",  # set by create_plan
                graduated=catalog.GraduatedProperties(
                    tiers=[
                        catalog.Tier(up_to="100", unit_amount="0"),
                        catalog.Tier(unit_amount="0.01"),
                    ]
                ),
            )
        ],
        feature_limits=[
            catalog.FeatureLimit(
                feature_key=FEATURE,
                limit="1000000",
                enforcement=catalog.LIMIT_ENFORCEMENT_SOFT,
                resets_each_period=True,
                metric_code=METRIC,
            )
        ],
    )


async def create_plan(channel: grpc.aio.Channel, run_id: str) -> Plan:
    api = catalog_pb2_grpc.CatalogServiceStub(channel)
    metric = await api.CreateMetric(
        catalog_pb2.CreateMetricRequest(
            metric=catalog.BillableMetric(
                code=METRIC, name="Bench calls", aggregation=catalog.AGGREGATION_COUNT
            ),
            request_id=f"{run_id}-metric",
        ),
        timeout=DEADLINE,
    )
    draft = _package()
    draft.charges[0].metric_id = metric.metric.metric_id
    package = await api.CreatePackage(
        catalog_pb2.CreatePackageRequest(
            code=f"bench-{run_id}", draft=draft, request_id=f"{run_id}-package"
        ),
        timeout=DEADLINE,
    )
    await api.PublishPackage(
        catalog_pb2.PublishPackageRequest(
            package_id=package.package.package_id, request_id=f"{run_id}-publish"
        ),
        timeout=DEADLINE,
    )
    return Plan(METRIC, package.package.package_id)


async def subscribe(
    channel: grpc.aio.Channel,
    plan: Plan,
    orgs: Sequence[str],
    *,
    concurrency: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[Subscribed]:
    """One subscription per org (the API has no batch create: ``concurrency`` calls in flight)."""
    api = subscriptions_pb2_grpc.SubscriptionsServiceStub(channel)
    queue = list(reversed(orgs))
    done: list[Subscribed] = []

    async def one(org: str) -> Subscribed:
        reply = await until_projected(
            lambda: api.CreateSubscription(
                subscriptions_pb2.CreateSubscriptionRequest(
                    org_id=org, package_id=plan.package_id, request_id=f"bench-sub-{org}"
                ),
                timeout=DEADLINE,
            )
        )
        sub = reply.subscription
        return Subscribed(
            org,
            sub.subscription_id,
            sub.current_period_start_time.ToDatetime(tzinfo=UTC),
            sub.current_period_end_time.ToDatetime(tzinfo=UTC),
        )

    async def worker() -> None:
        while queue:
            done.append(await one(queue.pop()))
            if progress is not None:
                progress(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def create_api_keys(
    channel: grpc.aio.Channel, orgs: Sequence[str], *, concurrency: int = 16
) -> dict[str, str]:
    """An ingestion API key per org (usage's CreateApiKey): org -> secret, for the dialects."""
    api = usage_pb2_grpc.UsageServiceStub(channel)
    queue = list(reversed(orgs))
    secrets: dict[str, str] = {}

    async def worker() -> None:
        while queue:
            org = queue.pop()
            # No request id: a retried create answers without the secret, so never retry.
            reply = await api.CreateApiKey(
                usage_pb2.CreateApiKeyRequest(org_id=org, name="bench"), timeout=DEADLINE
            )
            secrets[org] = reply.secret

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return secrets


async def wait_for_rows(
    database_url: str, query: str, expected: int, *, what: str, seconds: float = 300
) -> None:
    """Until ``query`` (a count) reaches ``expected``: another service caught up."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + seconds
        while True:
            got = int(await conn.fetchval(query))
            if got >= expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {got} of {expected} after {seconds:g}s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def wait_usage_ready(database_url: str, subscriptions: int) -> None:
    """Usage has the metric and every subscription with its open period."""
    await wait_for_rows(
        database_url,
        f"SELECT count(*) FROM usage.metric WHERE code = '{METRIC}' AND active",
        1,
        what="usage never learned the metric",
    )
    await wait_for_rows(
        database_url,
        "SELECT count(*) FROM usage.billing_period WHERE NOT closed",
        subscriptions,
        what="usage's open periods",
    )


# Longer than usage's throttle on ``usage.aggregated`` (5 s by default), so
# totals still due from the last ingestion have been emitted and applied.
QUIET_HOLD_SECONDS = 6.0


async def wait_quiet(
    database_url: str, nats_url: str, *, hold: float = QUIET_HOLD_SECONDS, seconds: float = 180
) -> bool:
    """Until no service has unsent outbox rows and no consumer has a message
    pending or unacknowledged, for ``hold`` seconds on end; False if that never
    happened within ``seconds`` (the measurement then runs beside the backlog).

    Each figure is then the path's own: the work an earlier step left behind
    (totals applied by subscriptions, invoices paid) does not share the cores.
    """
    unsent = " + ".join(
        f"(SELECT count(*) FROM {schema}.outbox_event WHERE published_at IS NULL)"
        for schema in SERVICE_NAMES
    )
    conn = await asyncpg.connect(database_url)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + seconds
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            busy = int(await conn.fetchval(f"SELECT {unsent}"))
            for stream in await js.streams_info():
                for info in await js.consumers_info(stream.config.name):
                    busy += (info.num_pending or 0) + (info.num_ack_pending or 0)
            now = time.monotonic()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= hold:
                return True
            await asyncio.sleep(0.25)
        return False
    finally:
        await nc.close()
        await conn.close()
