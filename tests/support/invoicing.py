"""Helpers for the invoicing service's integration tests: the service on real
PostgreSQL and NATS, a small real gRPC UsageService returning fixed
aggregates (usage is another service), and the events the producers publish."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf.message import Message
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import catalog_events_pb2, subscriptions_events_pb2
from tally.invoicing.v1 import invoicing_pb2 as api
from tally.invoicing.v1 import invoicing_pb2_grpc
from tally.invoicing.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb2
from tally.usage.v1 import resources_pb2 as usage_res
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from services.kit import migrations
from services.kit.bus import EventBus
from services.kit.devstack import free_port
from services.kit.events import EventEnvelope
from services.kit.protoconv import to_timestamp
from services.kit.runtime import ServiceRuntime
from services.kit.streams import producer_stream, stream_name
from tests.support.services import service_in_process

INVOICING_STREAM = stream_name("invoicing")
# The months the invoicing tests bill, and the segment kinds of their periods.
NOV, DEC, JAN, FEB = (
    datetime(2026, 11, 1, tzinfo=UTC),
    datetime(2026, 12, 1, tzinfo=UTC),
    datetime(2027, 1, 1, tzinfo=UTC),
    datetime(2027, 2, 1, tzinfo=UTC),
)
ACTIVE = subs_pb2.SEGMENT_KIND_ACTIVE
TRIAL = subs_pb2.SEGMENT_KIND_TRIAL


@dataclass
class FakeUsage(usage_pb2_grpc.UsageServiceServicer):  # type: ignore[misc]
    """GetAggregate from a dict: (subscription, metric, period start) -> value / event values."""

    values: dict[tuple[str, str, datetime | None], str] = field(default_factory=dict)
    events: dict[tuple[str, str, datetime | None], list[str]] = field(default_factory=dict)
    calls: int = 0

    async def GetAggregate(
        self, request: usage_pb2.GetAggregateRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.GetAggregateResponse:
        self.calls += 1
        start = (
            request.period_start_time.ToDatetime().replace(tzinfo=None)
            if request.HasField("period_start_time")
            else None
        )
        key = (request.subscription_id, request.metric_code, start)
        values = self.events.get(key, []) if request.include_event_values else []
        return usage_pb2.GetAggregateResponse(
            aggregate=usage_res.UsageAggregate(
                subscription_id=request.subscription_id,
                metric_code=request.metric_code,
                value=self.values.get(key, "0"),
                event_count=len(values),
            ),
            event_values=values,
        )

    def set(self, sub: str, metric: str, start: datetime | None, value: str) -> None:
        self.values[(sub, metric, None if start is None else start.replace(tzinfo=None))] = value

    def set_events(self, sub: str, metric: str, start: datetime, values: Sequence[str]) -> None:
        self.events[(sub, metric, start.replace(tzinfo=None))] = list(values)


@dataclass
class Harness:
    runtime: ServiceRuntime
    channel: grpc.aio.Channel
    stub: invoicing_pb2_grpc.InvoicingServiceStub
    bus: EventBus
    usage: FakeUsage
    usage_address: str

    async def publish(self, event: Message, aggregate_id: str) -> EventEnvelope:
        envelope = EventEnvelope.wrap(event, aggregate_id=aggregate_id)
        await self.bus.publish(envelope)
        return envelope

    async def publish_version(self, version: catalog_pb2.PackageVersion) -> None:
        await self.publish(
            catalog_events_pb2.PackagePublishedEvent(package_version=version), version.package_id
        )

    async def invoices(self, subscription_id: str) -> list[pb.Invoice]:
        reply = await self.stub.ListInvoices(
            api.ListInvoicesRequest(subscription_id=subscription_id), timeout=5
        )
        return list(reply.invoices)

    async def wait_invoices(
        self, subscription_id: str, count: int, timeout: float = 20
    ) -> list[pb.Invoice]:
        found: list[pb.Invoice] = []

        async def check() -> bool:
            nonlocal found
            found = await self.invoices(subscription_id)
            return len(found) >= count

        await wait_for(check, timeout)
        return sorted(found, key=lambda i: i.period_start_time.ToDatetime())

    async def events(self, aggregate_id: str = "") -> list[tuple[str, Message]]:
        js = self.bus.js
        info = await js.stream_info(INVOICING_STREAM)
        out: list[tuple[str, Message]] = []
        for seq in range(int(info.state.first_seq or 1), int(info.state.last_seq or 0) + 1):
            msg = await js.get_msg(INVOICING_STREAM, seq)
            env = EventEnvelope.from_message(
                msg.subject or "", dict(msg.headers or {}), msg.data or b""
            )
            if aggregate_id and env.aggregate_id != aggregate_id:
                continue
            out.append((env.subject.removeprefix("tally.invoicing."), env.decode()))
        return out


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_invoicing(database_url: str, nats_url: str, **env: str) -> AsyncIterator[Harness]:
    """Migrate, start a fake UsageService and the invoicing service in process."""
    await migrations.upgrade_async("invoicing", database_url)
    usage = FakeUsage()
    server = grpc.aio.server()
    usage_pb2_grpc.add_UsageServiceServicer_to_server(usage, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    settings = {
        "INVOICING_USAGE_ADDR": f"127.0.0.1:{port}",
        "INVOICING_FINALIZE_INTERVAL_SECONDS": "0",
        "INVOICING_USAGE_DEADLINE_SECONDS": "5",
        **env,
    }
    previous = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        async with service_in_process(
            "invoicing", database_url, nats_url, outbox_poll_seconds=0.05
        ) as runtime:
            bus = await EventBus.connect(nats_url, name="invoicing-tests")
            await bus.ensure_streams(
                [producer_stream(p) for p in ("catalog", "subscriptions", "payments", "invoicing")]
            )
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}")
            try:
                yield Harness(
                    runtime,
                    channel,
                    invoicing_pb2_grpc.InvoicingServiceStub(channel),
                    bus,
                    usage,
                    f"127.0.0.1:{port}",
                )
            finally:
                await channel.close()
                await bus.close()
    finally:
        await server.stop(0)
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def version(
    code: str,
    *,
    base_fee: str,
    in_advance: bool = True,
    trial_days: int = 0,
    charges: Sequence[catalog_pb2.Charge] = (),
    currency: str = "USD",
) -> catalog_pb2.PackageVersion:
    return catalog_pb2.PackageVersion(
        package_version_id=new_id(f"pv-{code}"),
        package_id=new_id(f"pkg-{code}"),
        package_code=code,
        version=1,
        state=catalog_pb2.PACKAGE_VERSION_STATE_PUBLISHED,
        name=code.title(),
        currency_code=currency,
        billing_interval=catalog_pb2.BILLING_INTERVAL_MONTHLY,
        base_fee_amount=base_fee,
        base_fee_timing=(
            catalog_pb2.BASE_FEE_TIMING_IN_ADVANCE
            if in_advance
            else catalog_pb2.BASE_FEE_TIMING_IN_ARREARS
        ),
        trial_days=trial_days,
        charges=list(charges),
    )


def charge(metric: str, **props: Any) -> catalog_pb2.Charge:
    return catalog_pb2.Charge(
        charge_id=new_id("chg"), metric_id=new_id("met"), metric_code=metric, **props
    )


Seg = tuple[catalog_pb2.PackageVersion, int, datetime, datetime]


def period_closed(
    org: str,
    sub: str,
    start: datetime,
    end: datetime,
    segments: Sequence[Seg],
    *,
    next_end: datetime | None = None,
    next_version: catalog_pb2.PackageVersion | None = None,
    next_kind: int = subs_pb2.SEGMENT_KIND_ACTIVE,
    ended: bool = False,
) -> subscriptions_events_pb2.SubscriptionPeriodClosedEvent:
    event = subscriptions_events_pb2.SubscriptionPeriodClosedEvent(
        subscription_id=sub,
        org_id=org,
        currency_code="USD",
        period=subs_pb2.BillingPeriod(
            subscription_id=sub,
            org_id=org,
            period_start_time=to_timestamp(start),
            period_end_time=to_timestamp(end),
            segments=[
                subs_pb2.PeriodSegment(
                    package_version_id=v.package_version_id,
                    package_code=v.package_code,
                    kind=kind,  # type: ignore[arg-type]
                    start_time=to_timestamp(s),
                    end_time=to_timestamp(e),
                )
                for v, kind, s, e in segments
            ],
            closed=True,
        ),
        package_version_id=segments[-1][0].package_version_id,
        subscription_ended=ended,
    )
    if not ended:
        nv = next_version or segments[-1][0]
        event.next_period_start_time.CopyFrom(to_timestamp(end))
        assert next_end is not None
        event.next_period_end_time.CopyFrom(to_timestamp(next_end))
        event.next_package_version_id = nv.package_version_id
        event.next_period_kind = next_kind  # type: ignore[assignment]
    return event


def amounts(inv: pb.Invoice) -> list[tuple[str, int]]:
    return [(pb.InvoiceLineKind.Name(li.kind), li.amount.amount_minor) for li in inv.lines]


D = Decimal
