"""Faults under load: nothing lost, nothing doubled.

One suite of separate processes on free ports. While a steady usage stream
(known idempotency keys, with repeats) and billing runs are under way, each
process is killed with SIGKILL and restarted, nats-server and PostgreSQL are
restarted, the relay is cut between commit and publish, and every stream's
last events are delivered again. Then ``tally verify`` must be clean, every
key the client saw stored must be counted exactly once, and every service must
have come back to SERVING on its own.

``make soak`` runs the same scenario with more rounds (``TALLY_SOAK_ROUNDS``).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from nats.js.errors import NotFoundError
from tally.catalog.v1 import resources_pb2 as catalog
from tally.invoicing.v1 import invoicing_pb2
from tally.invoicing.v1 import resources_pb2 as inv
from tally.payments.v1 import payments_pb2
from tally.payments.v1 import resources_pb2 as pay
from tally.subscriptions.v1 import subscriptions_pb2
from tally.usage.v1 import resources_pb2 as usage
from tally.usage.v1 import usage_pb2

from services.kit.bus import EventBus
from services.kit.devstack.suite import PROCESSES, Suite
from services.kit.protoconv import to_timestamp
from services.kit.settings import SERVICE_NAMES
from services.kit.streams import DLQ_STREAM, DUPLICATE_WINDOW, producer_stream, stream_name
from services.verify.run import verify
from tests.support.e2e import (
    TRANSIENT,
    Stubs,
    count_metric,
    publish,
    replay_stripe_webhooks,
    retrying,
    running_suite,
    until,
)
from tests.support.e2e import stubs as open_stubs

SOAK_ROUNDS = int(os.environ.get("TALLY_SOAK_ROUNDS", "1"))
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300 + 240 * SOAK_ROUNDS)]
STREAM_ORGS = 3
BILLING_ORGS = 3
BATCH = 40
REPEATS_PER_BATCH = 4
REDELIVER_LAST = 20


def month_start(at: datetime) -> datetime:
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_month(at: datetime, months: int = 1) -> datetime:
    year, month = divmod(at.month - 1 + months, 12)
    return at.replace(year=at.year + year, month=month + 1)


# The stream writes into the current month's period (events may not be in the
# future); the billing subscriptions started three periods per round before it.
PAST_PERIODS = 3 * SOAK_ROUNDS
STREAM_START = month_start(datetime.now(UTC) - timedelta(days=2))
BILLING_START = add_month(STREAM_START, -PAST_PERIODS)


@dataclass
class UsageStream:
    """A product workload sending batches with known keys until told to stop.

    A batch is retried with the same keys until the service answers; a key
    answered DUPLICATE that this client never saw stored means the lost
    attempt did store it, so it counts as stored. A key answered ACCEPTED
    twice would be counted twice: that is the bug this looks for.
    """

    api: Stubs
    orgs: list[str]
    stored: set[tuple[str, str]] = field(default_factory=set)
    accepted_twice: list[tuple[str, str]] = field(default_factory=list)
    phantom_duplicates: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    failed_calls: int = 0
    batches: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def event(self, org: str, key: str, at: datetime) -> usage.UsageEvent:
        return usage.UsageEvent(
            org_id=org, metric_code="api_calls", idempotency_key=key, event_time=to_timestamp(at)
        )

    async def send(self, events: list[usage.UsageEvent]) -> None:
        failed = False
        while True:
            try:
                reply = await self.api.usage.RecordUsageBatch(
                    usage_pb2.RecordUsageBatchRequest(events=events), timeout=5
                )
                break
            except grpc.aio.AioRpcError as err:
                if err.code() not in TRANSIENT:
                    raise
                failed = True
                self.failed_calls += 1
                await asyncio.sleep(0.3)
        for e, result in zip(events, reply.results, strict=True):
            key = (e.org_id, e.idempotency_key)
            if result.status == usage.USAGE_EVENT_STATUS_ACCEPTED:
                if key in self.stored:
                    self.accepted_twice.append(key)
                self.stored.add(key)
            elif result.status == usage.USAGE_EVENT_STATUS_DUPLICATE:
                if key not in self.stored and not failed:
                    self.phantom_duplicates.append(key)
                self.stored.add(key)
            else:
                self.rejected.append(f"{key}: {result.reason} {result.message}")

    async def run(self) -> None:
        n = 0
        rng = random.Random(7)
        while not self.stop.is_set():
            events = []
            for _ in range(BATCH):
                org = self.orgs[n % len(self.orgs)]
                at = STREAM_START + timedelta(seconds=n % 80_000)
                events.append(self.event(org, f"ev-{n}", at))
                n += 1
            stored = sorted(self.stored)
            for org, key in rng.sample(stored, min(REPEATS_PER_BATCH, len(stored))):
                events.append(self.event(org, key, STREAM_START))
            await self.send(events)
            self.batches += 1
            await asyncio.sleep(0.15)

    def count(self, org: str) -> int:
        return sum(1 for o, _ in self.stored if o == org)


@dataclass
class World:
    suite: Suite
    api: Stubs
    stream: UsageStream
    stream_subs: dict[str, str]
    billing_subs: dict[str, str]
    billing_usage: int


async def send_once_accepted(client: UsageStream, events: list[usage.UsageEvent]) -> None:
    """Usage learns of a subscription by event: retry until it takes the batch."""
    for _ in range(150):
        client.rejected.clear()
        await client.send(events)
        if not client.rejected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"usage kept rejecting: {client.rejected[:3]}")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(Path(tmp_path_factory.mktemp("faults"))) as running:
        yield running


@pytest.fixture(scope="module")
async def world(suite: Suite) -> AsyncIterator[World]:
    async with open_stubs(suite) as api:
        metric = await count_metric(api)
        package = await publish(
            api,
            "faults",
            catalog.PackageVersion(
                name="Faults",
                currency_code="USD",
                billing_interval=catalog.BILLING_INTERVAL_MONTHLY,
                base_fee_amount="10.00",
                base_fee_timing=catalog.BASE_FEE_TIMING_IN_ARREARS,
                charges=[
                    catalog.Charge(
                        metric_id=metric.metric_id,
                        standard=catalog.StandardProperties(unit_amount="0.01"),
                    )
                ],
            ),
        )

        async def subscribe(org: str, start: datetime) -> str:
            reply = await until(
                lambda: api.subscriptions.CreateSubscription(
                    subscriptions_pb2.CreateSubscriptionRequest(
                        org_id=org,
                        package_id=package.package_id,
                        start_time=to_timestamp(start),
                        request_id=f"sub-{org}",
                    ),
                    timeout=10,
                ),
                lambda r: bool(r.subscription.subscription_id),
            )
            return str(reply.subscription.subscription_id)

        stream_subs = {
            f"org-s{i}": await subscribe(f"org-s{i}", STREAM_START) for i in range(STREAM_ORGS)
        }
        billing_subs = {
            f"org-b{i}": await subscribe(f"org-b{i}", BILLING_START) for i in range(BILLING_ORGS)
        }
        if suite.stripe is not None:
            # Billing orgs pay by card, so collection runs through every fault too.
            for org in billing_subs:
                await until(
                    lambda org=org: api.payments.AttachPaymentMethod(  # type: ignore[misc]
                        payments_pb2.AttachPaymentMethodRequest(
                            org_id=org,
                            provider_payment_method_id="pm_card_visa",
                            set_default=True,
                            request_id=f"card-{org}",
                        ),
                        timeout=10,
                    ),
                    lambda r: bool(r.payment_method.payment_method_id),
                )
        billing = UsageStream(api, list(billing_subs))
        billing_usage = 3
        for org in billing_subs:
            await send_once_accepted(
                billing,
                [
                    billing.event(org, f"b-{i}", BILLING_START + timedelta(hours=i))
                    for i in range(billing_usage)
                ],
            )
        stream = UsageStream(api, list(stream_subs))
        for org in stream_subs:
            await send_once_accepted(stream, [stream.event(org, "warm-up", STREAM_START)])
        yield World(suite, api, stream, stream_subs, billing_subs, billing_usage)


async def close_periods(api: Stubs, now: datetime) -> None:
    await retrying(
        lambda: api.subscriptions.ClosePeriods(
            subscriptions_pb2.ClosePeriodsRequest(now=to_timestamp(now)), timeout=30
        )
    )


async def invoices_of(api: Stubs, subscription_id: str) -> list[inv.Invoice]:
    reply = await retrying(
        lambda: api.invoicing.ListInvoices(
            invoicing_pb2.ListInvoicesRequest(subscription_id=subscription_id, page_size=100),
            timeout=10,
        )
    )
    return sorted(reply.invoices, key=lambda i: i.period_start_time.ToDatetime())


async def wait_invoiced(api: Stubs, subs: dict[str, str], periods: int) -> None:
    for sid in subs.values():
        await until(lambda sid=sid: invoices_of(api, sid), lambda found: len(found) >= periods, 60)


async def restart(suite: Suite, name: str, env: dict[str, str] | None = None) -> None:
    """kill -9 and start again; off the event loop, so the usage stream keeps going."""

    def run() -> None:
        suite.restart_process(name, env=env)
        if name == "gateway":
            suite.wait_healthy(60)
        elif name == "console":
            suite.wait_console(60)
        else:
            suite.wait_serving((name,), 60)

    await asyncio.to_thread(run)


async def unpublished(suite: Suite, schema: str) -> int:
    conn = await asyncpg.connect(suite.database_url)
    try:
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM {schema}.outbox_event WHERE published_at IS NULL"
            )
        )
    finally:
        await conn.close()


async def redeliver_last_events(suite: Suite) -> int:
    """Publish each stream's last events again, past JetStream's duplicate window.

    With the window shrunk to a second, the same ``Nats-Msg-Id`` is stored as
    a new message, so every consumer receives the event a second time and only
    its inbox stands between it and a double effect.
    """
    bus = await EventBus.connect(suite.nats.url, name="faults-redeliver")
    sent = 0
    try:
        for producer in SERVICE_NAMES:
            config = producer_stream(producer)
            try:
                info = await bus.js.stream_info(stream_name(producer))
            except NotFoundError:
                continue
            last = int(info.state.last_seq or 0)
            if not last:
                continue
            first = max(int(info.state.first_seq or 1), last - REDELIVER_LAST + 1)
            messages = [
                await bus.js.get_msg(stream_name(producer), seq) for seq in range(first, last + 1)
            ]
            config.duplicate_window = 1.0
            await bus.js.update_stream(config)
            await asyncio.sleep(1.5)
            for msg in messages:
                await bus.js.publish(
                    msg.subject or "", msg.data or b"", headers=dict(msg.headers or {})
                )
                sent += 1
            config.duplicate_window = DUPLICATE_WINDOW.total_seconds()
            await bus.js.update_stream(config)
    finally:
        await bus.close()
    return sent


async def consumers_caught_up(suite: Suite) -> bool:
    bus = await EventBus.connect(suite.nats.url, name="faults-consumers")
    try:
        for producer in SERVICE_NAMES:
            try:
                consumers = await bus.js.consumers_info(stream_name(producer))
            except NotFoundError:
                continue
            if any(c.num_pending or c.num_ack_pending for c in consumers):
                return False
        return True
    finally:
        await bus.close()


async def parked_messages(suite: Suite) -> int:
    """Events parked on the dead-letter stream: effects that never happened."""
    bus = await EventBus.connect(suite.nats.url, name="faults-dlq")
    try:
        return int((await bus.js.stream_info(DLQ_STREAM)).state.messages or 0)
    finally:
        await bus.close()


async def collection(api: Stubs, org: str) -> dict[str, list[str]]:
    """Each of the org's invoices with the states of its payments."""
    reply = await retrying(
        lambda: api.payments.ListPayments(
            payments_pb2.ListPaymentsRequest(org_id=org, page_size=500), timeout=10
        )
    )
    found: dict[str, list[str]] = {}
    for p in reply.payments:
        found.setdefault(p.invoice_id, []).append(pay.PaymentState.Name(p.state))
    return found


async def paid_once_even_with_webhooks_again(world: World) -> None:
    """Every card-paying org's invoice is paid by exactly one payment, and stays so
    when every Stripe webhook arrives again, twice and out of order."""
    api = world.api
    for sid in world.billing_subs.values():
        await until(
            lambda sid=sid: invoices_of(api, sid),  # type: ignore[misc]
            lambda found: all(i.state == inv.INVOICE_STATE_PAID for i in found),
            90,
        )
    before = {org: await collection(api, org) for org in world.billing_subs}
    for org, sid in world.billing_subs.items():
        invoices = await invoices_of(api, sid)
        assert before[org] == {i.invoice_id: ["PAYMENT_STATE_SUCCEEDED"] for i in invoices}
    assert await replay_stripe_webhooks(world.suite) >= len(before)
    await asyncio.sleep(2)
    assert {org: await collection(api, org) for org in world.billing_subs} == before
    for sid in world.billing_subs.values():
        assert all(i.state == inv.INVOICE_STATE_PAID for i in await invoices_of(api, sid))


async def test_nothing_lost_nothing_doubled_under_faults(world: World) -> None:
    suite, api, stream = world.suite, world.api, world.stream
    runner = asyncio.create_task(stream.run())
    try:
        for soak_round in range(SOAK_ROUNDS):
            closes = [add_month(BILLING_START, 3 * soak_round + m) for m in (1, 2, 3)]
            invoiced = 3 * soak_round
            # kill -9 each process in turn; billing runs while some are down.
            for name in PROCESSES:
                if name == "invoicing":
                    # A period ends while invoicing is dead: its events wait for it.
                    await asyncio.to_thread(suite.kill_process, name)
                    await close_periods(api, closes[0])
                await restart(suite, name)
            await wait_invoiced(api, world.billing_subs, invoiced + 1)

            # The relay dropped between commit and publish: an API-only
            # subscriptions replica commits the closes and their events, then
            # dies before any relay ran; the restarted worker publishes them.
            await restart(suite, "subscriptions", env={"WORKER_BILLING_ENABLED": "false"})
            await close_periods(api, closes[1])
            assert await unpublished(suite, "subscriptions") >= len(world.billing_subs)
            await restart(suite, "subscriptions")
            await wait_invoiced(api, world.billing_subs, invoiced + 2)

            await asyncio.to_thread(suite.restart_nats)
            await asyncio.to_thread(suite.wait_serving, SERVICE_NAMES, 60)
            await close_periods(api, closes[2])
            await asyncio.to_thread(suite.restart_postgres)
            await asyncio.to_thread(suite.wait_serving, SERVICE_NAMES, 60)
            await wait_invoiced(api, world.billing_subs, invoiced + 3)

            assert await redeliver_last_events(suite) > 0
            await until(lambda: consumers_caught_up(suite), bool, 60)
    finally:
        stream.stop.set()
        await runner

    # Every key the client saw stored is counted once; repeats never.
    assert stream.accepted_twice == []
    assert stream.phantom_duplicates == []
    assert stream.rejected == []
    assert stream.batches > 10
    for org, sid in world.stream_subs.items():
        aggregate = await retrying(
            lambda sid=sid: api.usage.GetAggregate(
                usage_pb2.GetAggregateRequest(subscription_id=sid, metric_code="api_calls"),
                timeout=10,
            )
        )
        assert int(aggregate.aggregate.value) == stream.count(org), org

    # The stream's period closes: each invoice bills exactly the counted keys.
    await close_periods(api, add_month(STREAM_START))
    await wait_invoiced(api, world.stream_subs, 1)
    await wait_invoiced(api, world.billing_subs, PAST_PERIODS + 1)
    for org, sid in world.stream_subs.items():
        [invoice] = await invoices_of(api, sid)
        usage_lines = [li for li in invoice.lines if li.kind == inv.INVOICE_LINE_KIND_USAGE]
        assert [li.quantity for li in usage_lines] == [str(stream.count(org))]
        assert invoice.total.amount_minor == 1000 + stream.count(org)
    for sid in world.billing_subs.values():
        invoices = await invoices_of(api, sid)
        starts = [i.period_start_time.ToDatetime(tzinfo=UTC) for i in invoices]
        assert starts == [add_month(BILLING_START, m) for m in range(PAST_PERIODS + 1)]
        totals = [i.total.amount_minor for i in invoices]
        assert totals == [1000 + world.billing_usage] + [1000] * PAST_PERIODS

    if suite.stripe is not None:
        await paid_once_even_with_webhooks_again(world)

    # Each process came back to SERVING on its own, and the ledger holds.
    await asyncio.to_thread(suite.wait_serving, SERVICE_NAMES, 30)
    await until(lambda: consumers_caught_up(suite), bool, 60)
    assert await parked_messages(suite) == 0
    report = await verify(
        suite.database_url, payments_addr=suite.service_address("payments"), settle_seconds=5
    )
    assert report.findings == [], report.render()
    expected = len(world.stream_subs) + (PAST_PERIODS + 1) * len(world.billing_subs)
    assert report.checked["invoices"] == expected
