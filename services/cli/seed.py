"""Demo data for local environments (``tally seed``; ``tally dev up`` runs it).

Three packages, a handful of organisations whose subscriptions sit in
different states, three months of usage and the invoices those months close
into. Everything goes through the services' public gRPC APIs with fixed
request ids and idempotency keys, so a second run replays the first instead
of adding to it, and the data is exactly what a real client could have made.

Time is anchored to the start of the current month, so the seeded history is
always "the last three months" whatever the day.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
from tally.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as catalog
from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc
from tally.invoicing.v1 import resources_pb2 as invoicing
from tally.payments.v1 import payments_pb2, payments_pb2_grpc
from tally.subscriptions.v1 import resources_pb2 as subs
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from tally.usage.v1 import resources_pb2 as usage
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from services.kit.protoconv import to_timestamp
from services.kit.rpc.actor import cli_aio_channel

DEADLINE = 10.0
# Rejections that only mean "usage has not applied the catalog or
# subscription event yet".
NOT_YET = frozenset(
    {
        usage.USAGE_REJECTION_REASON_UNKNOWN_METRIC,
        usage.USAGE_REJECTION_REASON_UNKNOWN_SUBSCRIPTION,
        usage.USAGE_REJECTION_REASON_NO_ACTIVE_SUBSCRIPTION,
    }
)
HISTORY_MONTHS = 3
USAGE_BATCH = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class DemoOrg:
    """One seeded customer: its plan, how it pays and what happens to it."""

    org_id: str
    package: str
    months_ago: int  # 0: starts now
    card: str | None  # a Stripe test card token, or None for "no payment method"
    daily_calls: int
    trial_days: int | None = None
    cancel_at_period_end: bool = False
    # What finance did to its oldest invoices, oldest first.
    invoice_actions: tuple[str, ...] = ()


ORGS: tuple[DemoOrg, ...] = (
    DemoOrg("org_demo", "starter", HISTORY_MONTHS, "pm_card_visa", daily_calls=40),
    DemoOrg("org_acme", "growth", HISTORY_MONTHS, None, 400, invoice_actions=("void", "write_off")),
    DemoOrg("org_globex", "enterprise", 2, "pm_card_mastercard", daily_calls=300),
    DemoOrg("org_initech", "starter", 2, "pm_card_visa", 25, cancel_at_period_end=True),
    DemoOrg("org_hooli", "growth", 2, "pm_card_chargeDeclined", daily_calls=150),
    DemoOrg("org_umbrella", "growth", 0, None, daily_calls=0, trial_days=14),
)


def _api_calls_limit(limit: str, enforcement: catalog.LimitEnforcement) -> catalog.FeatureLimit:
    return catalog.FeatureLimit(
        feature_key="api_calls",
        limit=limit,
        enforcement=enforcement,
        resets_each_period=True,
        metric_code="api_calls",
    )


def _seats(limit: str) -> catalog.FeatureLimit:
    return catalog.FeatureLimit(
        feature_key="seats", limit=limit, enforcement=catalog.LIMIT_ENFORCEMENT_HARD
    )


def _graduated(*tiers: tuple[str | None, str]) -> catalog.GraduatedProperties:
    return catalog.GraduatedProperties(
        tiers=[
            catalog.Tier(up_to=up_to, unit_amount=unit) if up_to else catalog.Tier(unit_amount=unit)
            for up_to, unit in tiers
        ]
    )


def packages(api_calls: str, storage: str) -> dict[str, catalog.PackageVersion]:
    """Starter, Growth and Enterprise: graduated API calls, seat limits, storage."""

    def version(
        name: str, fee: str, calls: catalog.GraduatedProperties, limits: list[catalog.FeatureLimit]
    ) -> catalog.PackageVersion:
        return catalog.PackageVersion(
            name=name,
            description=f"Demo plan {name}: a monthly base fee and metered usage",
            currency_code="USD",
            billing_interval=catalog.BILLING_INTERVAL_MONTHLY,
            base_fee_amount=fee,
            base_fee_timing=catalog.BASE_FEE_TIMING_IN_ADVANCE,
            charges=[
                catalog.Charge(metric_id=api_calls, graduated=calls),
                catalog.Charge(
                    metric_id=storage,
                    standard=catalog.StandardProperties(unit_amount="0.25"),
                ),
            ],
            feature_limits=limits,
        )

    return {
        "starter": version(
            "Starter",
            "49.00",
            _graduated(("1000", "0"), ("100000", "0.002"), (None, "0.001")),
            [_api_calls_limit("100000", catalog.LIMIT_ENFORCEMENT_SOFT), _seats("5")],
        ),
        "growth": version(
            "Growth",
            "199.00",
            _graduated(("10000", "0"), ("500000", "0.0015"), (None, "0.0008")),
            [_api_calls_limit("500000", catalog.LIMIT_ENFORCEMENT_SOFT), _seats("25")],
        ),
        "enterprise": version(
            "Enterprise",
            "999.00",
            _graduated(("100000", "0"), ("5000000", "0.0008"), (None, "0.0004")),
            [_seats("250")],
        ),
    }


def month_start(at: datetime, months_back: int) -> datetime:
    year, month = at.year, at.month - months_back
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=UTC)


def usage_events(
    org: DemoOrg, now: datetime, start: datetime, end: datetime
) -> Iterator[usage.UsageEvent]:
    """The org's API calls and storage readings of the whole days in [start, end).

    Counts vary by day (a deterministic wobble, so reruns produce the same
    keys) and every key is derived from the org and the event's position.
    """
    if not org.daily_calls:
        return
    day = max(start, month_start(now, org.months_ago))
    while day + timedelta(days=1) <= min(end, now):
        wobble = int(hashlib.sha256(f"{org.org_id}{day:%F}".encode()).hexdigest()[:4], 16)
        calls = max(1, org.daily_calls * (70 + wobble % 60) // 100)
        step = timedelta(seconds=86_400 // calls)
        for i in range(calls):
            yield usage.UsageEvent(
                org_id=org.org_id,
                metric_code="api_calls",
                event_time=to_timestamp(day + step * i),
                idempotency_key=f"seed:{org.org_id}:{day:%F}:call:{i}",
            )
        yield usage.UsageEvent(
            org_id=org.org_id,
            metric_code="storage_gb",
            value=str(10 + wobble % 90),
            event_time=to_timestamp(day + timedelta(hours=23)),
            idempotency_key=f"seed:{org.org_id}:{day:%F}:storage",
        )
        day += timedelta(days=1)


@dataclass
class Seeded:
    """What the seed left behind, for the banner and for tests."""

    subscriptions: dict[str, str] = field(default_factory=dict)
    usage_events: int = 0
    usage_new: int = 0
    invoices_by_state: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.invoices_by_state.items()))
        orgs = ", ".join(f"{org}={sub}" for org, sub in self.subscriptions.items())
        text = (
            f"{len(self.subscriptions)} orgs ({orgs}),"
            f" {self.usage_events} usage events ({self.usage_new} new),"
            f" invoices: {states or 'none yet'}"
        )
        return text + "".join(f"\n    note: {n}" for n in self.notes)


class _NotYet(Exception):
    """Another service has not applied the event this call needs yet."""


async def _eventually(call: Callable[[], Awaitable[T]], seconds: float = 60) -> T:
    """Retry while another service has not yet caught up with an event it needs."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await call()
        except _NotYet:
            pass
        except grpc.aio.AioRpcError as err:
            if err.code() not in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.UNAVAILABLE,
            ):
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("the services never caught up with the seed's events") from None
        await asyncio.sleep(0.25)


class DemoSeeder:
    def __init__(self, channels: dict[str, grpc.aio.Channel], now: datetime) -> None:
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
        self.subscriptions = subscriptions_pb2_grpc.SubscriptionsServiceStub(
            channels["subscriptions"]
        )
        self.usage = usage_pb2_grpc.UsageServiceStub(channels["usage"])
        self.invoicing = invoicing_pb2_grpc.InvoicingServiceStub(channels["invoicing"])
        self.payments = payments_pb2_grpc.PaymentsServiceStub(channels["payments"])
        self.now = now
        self.result = Seeded()

    async def run(self) -> Seeded:
        package_ids = await self._catalog()
        for org in ORGS:
            await self._payment_method(org)
            self.result.subscriptions[org.org_id] = await self._subscribe(org, package_ids)
        # Month by month: usage learns each period from its close, so the
        # history is ingested and closed in the order it would have happened.
        for months_back in range(HISTORY_MONTHS, 0, -1):
            begin, end = month_start(self.now, months_back), month_start(self.now, months_back - 1)
            await self._usage(begin, end)
            await self._close_periods(end)
        await self._usage(month_start(self.now, 0), self.now)
        for org in ORGS:
            await self._finance(org)
            if org.cancel_at_period_end:
                await self._cancel(org)
        await self._count_invoices()
        return self.result

    async def _metric(
        self,
        code: str,
        name: str,
        aggregation: catalog.Aggregation,
        property_key: str = "",
    ) -> str:
        reply = await self.catalog.CreateMetric(
            catalog_pb2.CreateMetricRequest(
                metric=catalog.BillableMetric(
                    code=code, name=name, aggregation=aggregation, property_key=property_key
                ),
                request_id=f"seed-metric-{code}",
            ),
            timeout=DEADLINE,
        )
        return str(reply.metric.metric_id)

    async def _catalog(self) -> dict[str, str]:
        api_calls = await self._metric("api_calls", "API calls", catalog.AGGREGATION_COUNT)
        storage = await self._metric(
            "storage_gb", "Storage (GB, peak)", catalog.AGGREGATION_MAX, property_key="gb"
        )
        ids: dict[str, str] = {}
        for code, draft in packages(api_calls, storage).items():
            created = await self.catalog.CreatePackage(
                catalog_pb2.CreatePackageRequest(
                    code=code, draft=draft, request_id=f"seed-package-{code}"
                ),
                timeout=DEADLINE,
            )
            ids[code] = created.package.package_id
            await self.catalog.PublishPackage(
                catalog_pb2.PublishPackageRequest(
                    package_id=ids[code], request_id=f"seed-publish-{code}"
                ),
                timeout=DEADLINE,
            )
        return ids

    async def _payment_method(self, org: DemoOrg) -> None:
        if org.card is None:
            return
        try:
            await self.payments.AttachPaymentMethod(
                payments_pb2.AttachPaymentMethodRequest(
                    org_id=org.org_id,
                    provider_payment_method_id=org.card,
                    set_default=True,
                    request_id=f"seed-card-{org.org_id}",
                ),
                timeout=DEADLINE,
            )
        except grpc.aio.AioRpcError as err:
            # The suite runs without a payment provider when none is configured;
            # the rest of the demo is still worth having.
            self.result.notes.append(
                f"no card for {org.org_id}: payments answered {err.code().name} ({err.details()})"
            )

    async def _subscribe(self, org: DemoOrg, package_ids: dict[str, str]) -> str:
        request = subscriptions_pb2.CreateSubscriptionRequest(
            org_id=org.org_id,
            package_id=package_ids[org.package],
            billing_anchor=subs.BILLING_ANCHOR_CALENDAR,
            request_id=f"seed-subscription-{org.org_id}",
        )
        if org.months_ago:
            request.start_time.FromDatetime(month_start(self.now, org.months_ago))
        if org.trial_days is not None:
            request.trial_days = org.trial_days

        async def create() -> subscriptions_pb2.CreateSubscriptionResponse:
            reply: subscriptions_pb2.CreateSubscriptionResponse = (
                await self.subscriptions.CreateSubscription(request, timeout=DEADLINE)
            )
            return reply

        created = await _eventually(create)
        return str(created.subscription.subscription_id)

    async def _usage(self, begin: datetime, end: datetime) -> None:
        events = [e for org in ORGS for e in usage_events(org, self.now, begin, end)]
        self.result.usage_events += len(events)
        for start in range(0, len(events), USAGE_BATCH):
            pending = events[start : start + USAGE_BATCH]

            async def record() -> None:
                nonlocal pending
                reply: usage_pb2.RecordUsageBatchResponse = await self.usage.RecordUsageBatch(
                    usage_pb2.RecordUsageBatchRequest(events=pending), timeout=DEADLINE
                )
                self.result.usage_new += reply.accepted_count
                # Usage learns metrics and subscriptions from events; what it
                # has not seen yet goes again (the keys make that count once).
                # A rerun's PERIOD_CLOSED answers are history, not a problem.
                pending = [
                    pending[r.index]
                    for r in reply.results
                    if r.status == usage.USAGE_EVENT_STATUS_REJECTED and r.reason in NOT_YET
                ]
                if pending:
                    raise _NotYet

            await _eventually(record)

    async def _close_periods(self, at: datetime) -> None:
        """Run the billing clock at ``at`` until no period that ended by then is open."""
        for _ in range(len(ORGS) + 1):
            try:
                reply = await self.subscriptions.ClosePeriods(
                    subscriptions_pb2.ClosePeriodsRequest(now=to_timestamp(at)),
                    timeout=DEADLINE * 3,
                )
            except grpc.aio.AioRpcError as err:
                # A rerun (or the service's own clock) already ran past this
                # month: its history is closed and stays as it was.
                if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                return
            if not reply.closed_periods:
                return

    async def _invoices(self, org: DemoOrg) -> list[invoicing.Invoice]:
        reply = await self.invoicing.ListInvoices(
            invoicing_pb2.ListInvoicesRequest(org_id=org.org_id, page_size=100, omit_lines=True),
            timeout=DEADLINE,
        )
        return sorted(reply.invoices, key=lambda i: i.period_start_time.ToDatetime())

    async def _finance(self, org: DemoOrg) -> None:
        """Finalize drafts (all but the newest), then void / write off as the org says."""
        expected = org.months_ago

        async def closed() -> list[invoicing.Invoice]:
            found = await self._invoices(org)
            if len(found) < expected:
                raise _NotYet
            return found

        invoices = await _eventually(closed) if expected else await self._invoices(org)
        for invoice in invoices[:-1]:
            if invoice.state == invoicing.INVOICE_STATE_DRAFT:
                await self.invoicing.FinalizeInvoice(
                    invoicing_pb2.FinalizeInvoiceRequest(
                        invoice_id=invoice.invoice_id,
                        request_id=f"seed-finalize-{invoice.invoice_id}",
                    ),
                    timeout=DEADLINE,
                )
        for invoice, action in zip(invoices, org.invoice_actions, strict=False):
            await self._settle(invoice, action)

    async def _settle(self, invoice: invoicing.Invoice, action: str) -> None:
        try:
            if action == "void":
                await self.invoicing.VoidInvoice(
                    invoicing_pb2.VoidInvoiceRequest(
                        invoice_id=invoice.invoice_id,
                        reason="demo: billed in error",
                        request_id=f"seed-void-{invoice.invoice_id}",
                    ),
                    timeout=DEADLINE,
                )
            else:
                await self.invoicing.MarkInvoiceUncollectible(
                    invoicing_pb2.MarkInvoiceUncollectibleRequest(
                        invoice_id=invoice.invoice_id,
                        reason="demo: customer unreachable",
                        request_id=f"seed-write-off-{invoice.invoice_id}",
                    ),
                    timeout=DEADLINE,
                )
        except grpc.aio.AioRpcError as err:
            # A rerun finds the invoice already settled; anything else is news.
            if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise

    async def _cancel(self, org: DemoOrg) -> None:
        await self.subscriptions.CancelSubscription(
            subscriptions_pb2.CancelSubscriptionRequest(
                subscription_id=self.result.subscriptions[org.org_id],
                timing=subs.CANCEL_TIMING_PERIOD_END,
                reason="demo: moving to another vendor",
                request_id=f"seed-cancel-{org.org_id}",
            ),
            timeout=DEADLINE,
        )

    async def _count_invoices(self) -> None:
        counts: dict[str, int] = {}
        for org in ORGS:
            for invoice in await self._invoices(org):
                name = invoicing.InvoiceState.Name(invoice.state).removeprefix("INVOICE_STATE_")
                counts[name.lower()] = counts.get(name.lower(), 0) + 1
        self.result.invoices_by_state = counts


SEEDED_SERVICES = ("catalog", "subscriptions", "usage", "invoicing", "payments")


async def seed(addresses: dict[str, str], now: datetime | None = None) -> Seeded:
    """Seed the suite reachable at ``addresses`` (service name -> host:port)."""
    channels = {s: cli_aio_channel(addresses[s]) for s in SEEDED_SERVICES}
    try:
        return await DemoSeeder(channels, now or datetime.now(UTC)).run()
    finally:
        for channel in channels.values():
            await channel.close()


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "seed",
        help="demo data for a local environment through the services' APIs (<SERVICE>_ADDR);"
        " rerunning replays, it never duplicates",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from services.kit.addresses import all_service_addresses

    try:
        seeded = asyncio.run(seed(all_service_addresses()))
    except (grpc.aio.AioRpcError, RuntimeError) as exc:
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
        print(f"tally: error: seeding failed: {detail}", file=sys.stderr)
        return 1
    print(f"seeded {seeded.describe()}")
    return 0
