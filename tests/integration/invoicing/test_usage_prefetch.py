"""A group of period closes applied in one transaction reads its usage with one
BatchGetAggregates from a real usage service, and bills exactly what closing
each period alone (one GetAggregate per charge) bills."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.msg import Msg
from tally.catalog.v1 import resources_pb2 as cat
from tally.invoicing.v1 import resources_pb2 as pb

from services.invoicing import consumers
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.settings import Policy
from services.invoicing.usage_client import Aggregate, AggregateKey, UsageReader
from services.kit import migrations
from services.kit.consumer import EventConsumer
from services.kit.events import EventEnvelope
from tests.support.invoicing import (
    ACTIVE,
    Harness,
    charge,
    new_id,
    period_closed,
    running_invoicing,
    version,
    wait_for,
)
from tests.support.usage import Seeder, event, record_batch, usage_stack

pytestmark = pytest.mark.integration

PLAN = version(
    "usage-prefetch",
    base_fee="30",
    in_advance=False,
    charges=[
        charge("api_calls", standard=cat.StandardProperties(unit_amount="0.01")),
        charge("bytes_sent", percentage=cat.PercentageProperties(rate="2.5", fixed_amount="0.3")),
    ],
)
AT_ONCE = Policy(grace_period=timedelta(0), payment_terms=timedelta(days=14))


class RecordingReader:
    """The real reader, counting the calls it makes on usage."""

    def __init__(self, reader: UsageReader) -> None:
        self.reader = reader
        self.single_calls = 0
        self.batches: list[int] = []  # keys per batch call

    async def aggregate(
        self,
        subscription_id: str,
        org_id: str,
        metric_code: str,
        period_start: datetime | None,
        *,
        with_values: bool = False,
    ) -> Aggregate:
        self.single_calls += 1
        return await self.reader.aggregate(
            subscription_id, org_id, metric_code, period_start, with_values=with_values
        )

    async def aggregates(self, keys: Sequence[AggregateKey]) -> dict[AggregateKey, Aggregate]:
        self.batches.append(len(keys))
        return await self.reader.aggregates(keys)


@dataclass
class Setup:
    h: Harness
    seeder: Seeder
    stub: Any
    reader: RecordingReader
    consumer: EventConsumer[InvoicingUnitOfWork]


@pytest.fixture(scope="module")
async def setup(database_url: str, nats_url: str) -> AsyncIterator[Setup]:
    await migrations.upgrade_async("usage", database_url)
    async with (
        running_invoicing(database_url, nats_url) as h,
        usage_stack(database_url, nats_url) as (usage, stub, seeder, _bus),
    ):
        await seeder.metrics()
        await h.publish_version(PLAN)
        ctx = h.runtime.context
        assert ctx is not None

        def uow() -> InvoicingUnitOfWork:
            return InvoicingUnitOfWork(ctx.database, ctx.outbox)

        async def projected() -> bool:
            async with uow() as u:
                return bool(await u.repo.version_rows({PLAN.package_version_id}))

        await wait_for(projected)
        reader = RecordingReader(UsageReader(f"127.0.0.1:{usage.port}", 5))
        (subscription,) = [
            s
            for s in consumers.subscriptions(reader, AT_ONCE, messages_per_transaction=10)
            if s.durable == "subscriptions"
        ]
        # Its own consumer name, so the running service's inbox rows are apart.
        consumer = EventConsumer("invoicing-prefetch", h.bus, uow, ctx.inbox, subscription)
        yield Setup(h, seeder, stub, reader, consumer)
        await reader.reader.close()


@dataclass(frozen=True)
class Period:
    org: str
    sub: str
    start: datetime
    end: datetime


async def with_usage(s: Setup, calls: int) -> Period:
    """A subscription in usage with ``calls`` API calls and two payments."""
    org = new_id("org")
    sub, start, end = await s.seeder.subscription(org)
    at = datetime.now(UTC) - timedelta(hours=1)
    await record_batch(
        s.stub,
        [
            *(event(org, "api_calls", f"c{i}", at=at) for i in range(calls)),
            event(org, "bytes_sent", "p1", "10", at=at),
            event(org, "bytes_sent", "p2", "25.5", at=at + timedelta(minutes=1)),
        ],
    )
    return Period(org, sub, start, end)


def message(s: Setup, p: Period) -> Msg:
    closed = period_closed(
        p.org,
        p.sub,
        p.start,
        p.end,
        [(PLAN, ACTIVE, p.start, p.end)],
        next_end=p.end + (p.end - p.start),
    )
    envelope = EventEnvelope.wrap(closed, aggregate_id=p.sub)
    return Msg(
        s.h.bus.nc, subject=envelope.subject, data=envelope.payload, headers=envelope.headers()
    )


def billed(inv: pb.Invoice) -> list[tuple[Any, ...]]:
    """What an invoice bills, without what differs between two subscriptions."""
    return [
        (pb.InvoiceLineKind.Name(li.kind), li.description, li.quantity, li.amount.amount_minor)
        for li in inv.lines
    ] + [("total", inv.total.amount_minor)]


async def invoice_of(s: Setup, p: Period) -> pb.Invoice:
    (inv,) = await s.h.invoices(p.sub)
    return inv


async def test_a_group_reads_usage_once_and_bills_like_one_by_one(setup: Setup) -> None:
    s = setup
    grouped = [await with_usage(s, calls) for calls in (1, 2, 3)]
    alone = [await with_usage(s, calls) for calls in (1, 2, 3)]
    s.reader.batches.clear()
    s.reader.single_calls = 0

    await s.consumer.apply_group([message(s, p) for p in grouped])
    assert s.reader.batches == [6]  # three periods, two charges each, one call
    assert s.reader.single_calls == 0

    for p in alone:
        m = message(s, p)
        assert await s.consumer.apply(m.subject, dict(m.headers or {}), m.data)
    assert s.reader.batches == [6]
    assert s.reader.single_calls == 6

    for calls, (g, a) in enumerate(zip(grouped, alone, strict=True), start=1):
        g_inv, a_inv = await invoice_of(s, g), await invoice_of(s, a)
        assert billed(g_inv) == billed(a_inv)
        assert [li.quantity for li in g_inv.lines if li.metric_code == "api_calls"] == [str(calls)]


async def test_a_period_usage_does_not_know_falls_back_to_reading_alone(setup: Setup) -> None:
    s = setup
    known = await with_usage(s, 4)
    now = datetime.now(UTC).replace(microsecond=0)
    unknown = Period(new_id("org"), new_id("sub"), now - timedelta(days=10), now)
    s.reader.batches.clear()
    s.reader.single_calls = 0

    await s.consumer.apply_group([message(s, known), message(s, unknown)])
    # The batch fails NOT_FOUND as a whole; each charge is then read alone,
    # where NOT_FOUND reads as zero usage, as before.
    assert s.reader.batches == [4]
    assert s.reader.single_calls == 4
    known_inv, unknown_inv = await invoice_of(s, known), await invoice_of(s, unknown)
    assert [li.quantity for li in known_inv.lines if li.metric_code == "api_calls"] == ["4"]
    assert [li.quantity for li in unknown_inv.lines if li.metric_code] == ["0", "0"]
