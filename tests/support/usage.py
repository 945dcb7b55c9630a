"""Helpers for the usage service's integration tests.

Projections are seeded the way production seeds them: by publishing real
catalog and subscriptions events to NATS and waiting until the running usage
service has applied them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import catalog_events_pb2, subscriptions_events_pb2
from tally.subscriptions.v1 import resources_pb2 as subscriptions_pb2
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from services.kit.bus import EventBus
from services.kit.devstack import free_port
from services.kit.events import EventEnvelope
from services.kit.runtime import ServiceRuntime
from services.kit.settings import settings_class_for
from services.kit.streams import producer_stream
from tests.support.services import service_in_process

AGGREGATIONS = {
    "count": catalog_pb2.AGGREGATION_COUNT,
    "sum": catalog_pb2.AGGREGATION_SUM,
    "max": catalog_pb2.AGGREGATION_MAX,
    "unique_count": catalog_pb2.AGGREGATION_UNIQUE_COUNT,
    "latest": catalog_pb2.AGGREGATION_LATEST,
}

# One metric per aggregation, seeded once per module.
METRICS = {
    "api_calls": ("count", ""),
    "bytes_sent": ("sum", "bytes"),
    "peak_seats": ("max", "seats"),
    "active_users": ("unique_count", "user_id"),
    "balance": ("latest", "amount"),
}


def ts(at: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at)
    return t


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.05)


class Seeder:
    """Publishes catalog/subscriptions events and waits for the projections."""

    def __init__(self, bus: EventBus, database_url: str) -> None:
        self.bus = bus
        self.database_url = database_url

    async def _scalar(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def publish(self, event: Any, aggregate_id: str) -> None:
        await self.bus.publish(EventEnvelope.wrap(event, aggregate_id=aggregate_id))

    async def metric(
        self, code: str, aggregation: str, property_key: str = "", *, archived: bool = False
    ) -> None:
        metric = catalog_pb2.BillableMetric(
            metric_id=f"m-{code}",
            code=code,
            name=code,
            aggregation=AGGREGATIONS[aggregation],
            property_key=property_key,
            state=catalog_pb2.METRIC_STATE_ARCHIVED
            if archived
            else catalog_pb2.METRIC_STATE_ACTIVE,
        )
        event_cls = (
            catalog_events_pb2.MetricArchivedEvent
            if archived
            else catalog_events_pb2.MetricCreatedEvent
        )
        await self.publish(event_cls(metric=metric), f"m-{code}")
        await eventually(
            lambda: self._has(
                "SELECT active = $2 FROM usage.metric WHERE code = $1", code, not archived
            ),
            what=f"metric {code}",
        )

    async def _has(self, sql: str, *args: Any) -> bool:
        return bool(await self._scalar(sql, *args))

    async def metrics(self, metrics: dict[str, tuple[str, str]] = METRICS) -> None:
        for code, (aggregation, key) in metrics.items():
            await self.metric(code, aggregation, key)

    def subscription_message(
        self,
        subscription_id: str,
        org_id: str,
        start: datetime,
        end: datetime,
        state: int = subscriptions_pb2.SUBSCRIPTION_STATE_ACTIVE,
        update_time: datetime | None = None,
        pause_time: datetime | None = None,
        package_version_id: str = "pv-1",
    ) -> subscriptions_pb2.Subscription:
        sub = subscriptions_pb2.Subscription(
            subscription_id=subscription_id,
            org_id=org_id,
            state=state,
            package_version_id=package_version_id,
            current_period_start_time=ts(start),
            current_period_end_time=ts(end),
            start_time=ts(start),
            update_time=ts(update_time or datetime.now(UTC)),
        )
        if pause_time is not None:
            sub.pause_time.CopyFrom(ts(pause_time))
        return sub

    async def subscription(
        self,
        org_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        subscription_id: str | None = None,
        package_version_id: str = "pv-1",
    ) -> tuple[str, datetime, datetime]:
        """A new active subscription whose current period contains now."""
        now = datetime.now(UTC).replace(microsecond=0)
        start = start or now - timedelta(days=10)
        end = end or now + timedelta(days=20)
        subscription_id = subscription_id or uid("sub")
        sub = self.subscription_message(
            subscription_id, org_id, start, end, package_version_id=package_version_id
        )
        await self.publish(
            subscriptions_events_pb2.SubscriptionCreatedEvent(subscription=sub), subscription_id
        )
        await self.wait_period(subscription_id, start)
        return subscription_id, start, end

    async def wait_period(
        self, subscription_id: str, start: datetime, closed: bool = False
    ) -> None:
        await eventually(
            lambda: self._has(
                "SELECT closed = $3 FROM usage.billing_period"
                " WHERE subscription_id = $1 AND period_start = $2",
                subscription_id,
                start,
                closed,
            ),
            what=f"period {subscription_id}@{start.isoformat()} closed={closed}",
        )

    async def paused(
        self,
        subscription_id: str,
        org_id: str,
        start: datetime,
        end: datetime,
        pause_time: datetime,
    ) -> None:
        sub = self.subscription_message(
            subscription_id,
            org_id,
            start,
            end,
            state=subscriptions_pb2.SUBSCRIPTION_STATE_PAUSED,
            pause_time=pause_time,
        )
        await self.publish(
            subscriptions_events_pb2.SubscriptionPausedEvent(
                subscription_id=subscription_id,
                org_id=org_id,
                pause_time=ts(pause_time),
                subscription=sub,
            ),
            subscription_id,
        )
        await eventually(
            lambda: self._has(
                "SELECT state = 'paused' FROM usage.subscription WHERE subscription_id = $1",
                subscription_id,
            ),
            what="pause applied",
        )

    async def close_period(
        self,
        subscription_id: str,
        org_id: str,
        start: datetime,
        end: datetime,
        next_end: datetime | None = None,
    ) -> None:
        event = subscriptions_events_pb2.SubscriptionPeriodClosedEvent(
            subscription_id=subscription_id,
            org_id=org_id,
            currency_code="EUR",
            period=subscriptions_pb2.BillingPeriod(
                subscription_id=subscription_id,
                org_id=org_id,
                period_start_time=ts(start),
                period_end_time=ts(end),
                closed=True,
                close_time=ts(datetime.now(UTC)),
            ),
            package_version_id="pv-1",
        )
        if next_end is not None:
            event.next_period_start_time.CopyFrom(ts(end))
            event.next_period_end_time.CopyFrom(ts(next_end))
        await self.publish(event, subscription_id)
        await self.wait_period(subscription_id, start, closed=True)


@asynccontextmanager
async def usage_on_port(database_url: str, nats_url: str, port: int) -> AsyncIterator[Any]:
    """The usage service on a given port (``service_in_process`` picks its own),
    so a restart comes back where clients expect it."""
    from services.usage.bootstrap import SPEC

    settings = settings_class_for("usage")(
        database_url=database_url, nats_url=nats_url, grpc_port=port, http_port=free_port()
    )
    runtime = ServiceRuntime(SPEC, settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop(grace=1)


@asynccontextmanager
async def usage_stack(
    database_url: str, nats_url: str, port: int | None = None
) -> AsyncIterator[tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder, EventBus]]:
    """The usage service in process, a stub on a channel, and a seeder."""
    bus = await EventBus.connect(nats_url, name="usage-tests")
    await bus.ensure_streams([producer_stream("catalog"), producer_stream("subscriptions")])
    service = (
        usage_on_port(database_url, nats_url, port)
        if port
        else service_in_process("usage", database_url, nats_url)
    )
    try:
        async with (
            service as runtime,
            grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
        ):
            yield runtime, usage_pb2_grpc.UsageServiceStub(channel), Seeder(bus, database_url), bus
    finally:
        await bus.close()


def event(
    org_id: str,
    metric_code: str,
    key: str,
    value: str = "",
    *,
    at: datetime | None = None,
    subscription_id: str = "",
    properties: dict[str, str] | None = None,
) -> usage_pb2.UsageEvent:
    e = usage_pb2.UsageEvent(
        org_id=org_id,
        metric_code=metric_code,
        idempotency_key=key,
        value=value,
        subscription_id=subscription_id,
        properties=properties or {},
    )
    if at is not None:
        e.event_time.CopyFrom(ts(at))
    return e


async def record_batch(
    stub: usage_pb2_grpc.UsageServiceStub, events: Iterable[usage_pb2.UsageEvent], **kw: Any
) -> usage_api.RecordUsageBatchResponse:
    response: usage_api.RecordUsageBatchResponse = await stub.RecordUsageBatch(
        usage_api.RecordUsageBatchRequest(events=list(events), **kw), timeout=30
    )
    return response


async def aggregate(
    stub: usage_pb2_grpc.UsageServiceStub, subscription_id: str, metric_code: str
) -> tuple[Decimal, int]:
    reply = await stub.GetAggregate(
        usage_api.GetAggregateRequest(subscription_id=subscription_id, metric_code=metric_code),
        timeout=10,
    )
    return Decimal(reply.aggregate.value), reply.aggregate.event_count
