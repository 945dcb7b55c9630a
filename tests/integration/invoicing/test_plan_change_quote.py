"""PreviewPlanChange against the real services: catalog, subscriptions, usage
and invoicing in process, wired as in production (invoicing asks
subscriptions' ChangePlan with validate_only). The quote must be what the
change then produces: the plan-change invoice line by line, and the period's
close invoice (or PreviewInvoice right after the change).

Time is the billing clock (ClosePeriods moves it), kept ahead of the wall
clock, so a change is stamped at exactly the instant the test chose. Every
case starts its subscription at the clock's instant in a month of its own and
cancels it when done, so no case's periods close in another's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tally.catalog.v1 import catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as cat_pb
from tally.invoicing.v1 import invoicing_pb2 as inv_api
from tally.invoicing.v1 import invoicing_pb2_grpc
from tally.invoicing.v1 import resources_pb2 as inv_pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb
from tally.subscriptions.v1 import subscriptions_pb2 as subs_api
from tally.subscriptions.v1 import subscriptions_pb2_grpc

from services.kit.devstack import free_port
from services.kit.protoconv import from_timestamp, to_timestamp
from tests.integration.test_catalog_subscriptions_usage import eventually
from tests.support.catalog import publish_per_call_package
from tests.support.gateway import gateway_client, gateway_settings, portal_headers
from tests.support.subscriptions import details
from tests.support.suite import Suite, billing_suite

pytestmark = pytest.mark.integration
T = 10.0
IMMEDIATE = subs_pb.PLAN_CHANGE_TIMING_IMMEDIATE
PERIOD_END = subs_pb.PLAN_CHANGE_TIMING_PERIOD_END
AUTOMATIC = subs_pb.PLAN_CHANGE_TIMING_AUTOMATIC
IN_ADVANCE, IN_ARREARS = cat_pb.BASE_FEE_TIMING_IN_ADVANCE, cat_pb.BASE_FEE_TIMING_IN_ARREARS

# name -> (base fee, timing, currency): upgrades, downgrades, a lateral move,
# a version billed in arrears, and one no change may reach (another currency).
PACKAGES = {
    "basic": ("10.00", IN_ADVANCE, "USD"),
    "pro": ("30.00", IN_ADVANCE, "USD"),
    "starter": ("5.00", IN_ADVANCE, "USD"),
    "twin": ("10.00", IN_ADVANCE, "USD"),
    "metered": ("20.00", IN_ARREARS, "USD"),
    "euro": ("10.00", IN_ADVANCE, "EUR"),
}
CHANGEABLE = [n for n, (_, _, c) in PACKAGES.items() if c == "USD"]


@dataclass
class World:
    suite: Suite
    subs: subscriptions_pb2_grpc.SubscriptionsServiceStub
    invoicing: invoicing_pb2_grpc.InvoicingServiceStub
    packages: dict[str, cat_pb.Package]
    clock: datetime  # the billing clock's latest instant

    async def move_clock(self, to: datetime) -> None:
        await self.subs.ClosePeriods(subs_api.ClosePeriodsRequest(now=to_timestamp(to)), timeout=T)
        self.clock = to

    async def subscribe(
        self, package: str, *, trial_days: int = 0, anchor: int = subs_pb.BILLING_ANCHOR_CALENDAR
    ) -> subs_pb.Subscription:
        """A new org subscribed from the clock's instant, once invoicing knows it."""
        org = f"org_{uuid.uuid4().hex[:10]}"
        created = await self.subs.CreateSubscription(
            subs_api.CreateSubscriptionRequest(
                org_id=org,
                package_id=self.packages[package].package_id,
                trial_days=trial_days,
                billing_anchor=anchor,  # type: ignore[arg-type]
            ),
            timeout=T,
        )
        sub = created.subscription
        await eventually(
            lambda: self.invoicing.PreviewInvoice(
                inv_api.PreviewInvoiceRequest(org_id=org, subscription_id=sub.subscription_id),
                timeout=T,
            ),
            lambda r: r.invoice.period_start_time == sub.current_period_start_time,
        )
        return sub

    def change_request(self, sub: subs_pb.Subscription, target: str, timing: int) -> dict[str, Any]:
        return {
            "subscription_id": sub.subscription_id,
            "org_id": sub.org_id,
            "package_id": self.packages[target].package_id,
            "timing": timing,
        }

    async def quote(
        self, sub: subs_pb.Subscription, target: str, timing: int
    ) -> inv_api.PreviewPlanChangeResponse:
        request = inv_api.PreviewPlanChangeRequest(**self.change_request(sub, target, timing))
        reply: inv_api.PreviewPlanChangeResponse = await self.invoicing.PreviewPlanChange(
            request, timeout=T
        )
        return reply

    async def change(
        self, sub: subs_pb.Subscription, target: str, timing: int
    ) -> subs_api.ChangePlanResponse:
        request = subs_api.ChangePlanRequest(**self.change_request(sub, target, timing))
        reply: subs_api.ChangePlanResponse = await self.subs.ChangePlan(request, timeout=T)
        return reply

    async def invoices(self, sub: subs_pb.Subscription, count: int) -> list[inv_pb.Invoice]:
        """The subscription's invoices, oldest first, once there are ``count``."""
        listed = await eventually(
            lambda: self.invoicing.ListInvoices(
                inv_api.ListInvoicesRequest(subscription_id=sub.subscription_id), timeout=T
            ),
            lambda r: len(r.invoices) >= count,
        )
        return list(reversed(listed.invoices))

    async def end(self, sub: subs_pb.Subscription) -> None:
        """Cancel now, so the clock moving on closes none of its periods."""
        await self.subs.CancelSubscription(
            subs_api.CancelSubscriptionRequest(
                subscription_id=sub.subscription_id, timing=subs_pb.CANCEL_TIMING_IMMEDIATE
            ),
            timeout=T,
        )


@pytest.fixture(scope="module")
async def world(database_url: str, nats_url: str) -> AsyncIterator[World]:
    async with billing_suite(database_url, nats_url) as suite:
        catalog = catalog_pb2_grpc.CatalogServiceStub(suite.channels["catalog"])
        packages: dict[str, cat_pb.Package] = {}
        for name, (fee, timing, currency) in PACKAGES.items():
            _, packages[name] = await publish_per_call_package(
                catalog,
                package_code=name,
                metric_request_id="metric-api-calls",
                base_fee_amount=fee,
                base_fee_timing=timing,
                currency_code=currency,
                trial_days=0,
            )
        w = World(
            suite,
            subscriptions_pb2_grpc.SubscriptionsServiceStub(suite.channels["subscriptions"]),
            invoicing_pb2_grpc.InvoicingServiceStub(suite.channels["invoicing"]),
            packages,
            # Ahead of the wall clock for the whole module: changes are stamped
            # at the billing clock's instant, the one each case chose.
            (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0),
        )
        await w.move_clock(w.clock)
        yield w


def next_month_start(after: datetime) -> datetime:
    year, month = divmod(after.year * 12 + after.month, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


def without_ids(invoice: inv_pb.Invoice) -> list[inv_pb.InvoiceLine]:
    lines = []
    for line in invoice.lines:
        copy = inv_pb.InvoiceLine()
        copy.CopyFrom(line)
        copy.line_id = ""
        lines.append(copy)
    return lines


def assert_same_invoice(quoted: inv_pb.Invoice, real: inv_pb.Invoice) -> None:
    """Line by line (all but the ids), and the totals before the credit
    balance, which only finalization consumes."""
    assert quoted.reason == real.reason
    assert quoted.currency_code == real.currency_code
    assert quoted.period_start_time == real.period_start_time
    assert quoted.period_end_time == real.period_end_time
    assert without_ids(quoted) == without_ids(real)
    assert quoted.subtotal == real.subtotal
    assert quoted.tax == real.tax
    assert quoted.total.amount_minor == real.total.amount_minor + real.credit_applied.amount_minor


@dataclass(frozen=True)
class Case:
    old: str
    new: str
    timing: int
    trial_days: int
    anchor: int
    start_day: int
    start_second: int
    at_permille: int


cases = st.builds(
    Case,
    old=st.sampled_from(CHANGEABLE),
    new=st.sampled_from(CHANGEABLE),
    timing=st.sampled_from([AUTOMATIC, IMMEDIATE, PERIOD_END]),
    # None; ending inside the first period; outlasting it.
    trial_days=st.sampled_from([0, 0, 6, 45]),
    anchor=st.sampled_from([subs_pb.BILLING_ANCHOR_CALENDAR, subs_pb.BILLING_ANCHOR_ANNIVERSARY]),
    # Days 1..27: an anniversary never clamped to a short month (see
    # domain.open_period on the one printed end that would differ).
    start_day=st.integers(0, 26),
    start_second=st.integers(0, 86_399),
    at_permille=st.integers(1, 999),
).filter(lambda c: c.old != c.new)


async def check_quote_is_what_the_change_produces(w: World, case: Case) -> None:
    start = next_month_start(w.clock) + timedelta(days=case.start_day, seconds=case.start_second)
    await w.move_clock(start)
    sub = await w.subscribe(case.old, trial_days=case.trial_days, anchor=case.anchor)
    begin = from_timestamp(sub.current_period_start_time)
    end = from_timestamp(sub.current_period_end_time)
    assert begin == start and end is not None
    at = begin + timedelta(seconds=(end - begin).total_seconds() * case.at_permille // 1000)
    await w.move_clock(at)

    quote = await w.quote(sub, case.new, case.timing)
    changed = await w.change(sub, case.new, case.timing)
    assert quote.direction == changed.direction
    assert quote.effective_time == changed.effective_time
    assert quote.previous_package_version_id == changed.previous_package_version_id
    immediate = not changed.HasField("schedule")
    assert quote.timing == (IMMEDIATE if immediate else PERIOD_END)
    assert from_timestamp(quote.effective_time) == (at if immediate else end)

    if immediate:
        # PreviewInvoice follows the change once invoicing applied it.
        after = await eventually(
            lambda: w.invoicing.PreviewInvoice(
                inv_api.PreviewInvoiceRequest(
                    org_id=sub.org_id, subscription_id=sub.subscription_id
                ),
                timeout=T,
            ),
            lambda r: any(
                li.package_version_id == quote.package_version_id for li in r.invoice.lines
            ),
        )
        assert_same_invoice(quote.next_invoice, after.invoice)

    await w.move_clock(end)
    invoices = await w.invoices(sub, 1 + quote.HasField("due_now"))
    by_reason = {i.reason: i for i in invoices}
    assert len(by_reason) == len(invoices)
    if quote.HasField("due_now"):
        assert_same_invoice(quote.due_now, by_reason[inv_pb.INVOICE_REASON_PLAN_CHANGE])
    else:
        assert inv_pb.INVOICE_REASON_PLAN_CHANGE not in by_reason
    assert_same_invoice(quote.next_invoice, by_reason[inv_pb.INVOICE_REASON_PERIOD_CLOSE])
    await w.end(sub)


@settings(
    max_examples=18,
    deadline=None,
    # Shrinking replays whole cases against the services for minutes; the
    # failing case is reported as drawn.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases)
async def test_the_quote_is_what_the_change_then_invoices(world: World, case: Case) -> None:
    await check_quote_is_what_the_change_produces(world, case)


async def test_an_upgrade_now_in_numbers(world: World) -> None:
    """basic (10.00 in advance) to pro (30.00) a third of the way through a
    30-day period: nothing was billed yet (a first period is billed at its
    close), so nothing is credited and pro's fee for the remaining 20 days is
    due now: 20.00; the close then bills basic's 10 days (3.33) and pro's next
    month in advance (30.00)."""
    first = next_month_start(world.clock)
    while first.month != 4:  # April: 30 days, whole-day arithmetic
        first = next_month_start(first)
    await world.move_clock(first)
    sub = await world.subscribe("basic", anchor=subs_pb.BILLING_ANCHOR_ANNIVERSARY)
    await world.move_clock(first + timedelta(days=10))
    quote = await world.quote(sub, "pro", AUTOMATIC)
    assert quote.direction == subs_pb.CHANGE_DIRECTION_UPGRADE
    assert quote.timing == IMMEDIATE
    assert [
        (inv_pb.InvoiceLineKind.Name(li.kind), li.amount.amount_minor) for li in quote.due_now.lines
    ] == [("INVOICE_LINE_KIND_BASE_FEE", 2000)]
    proration = quote.due_now.lines[0].proration
    assert (proration.seconds_used, proration.seconds_in_period) == (20 * 86400, 30 * 86400)
    assert [
        (inv_pb.InvoiceLineKind.Name(li.kind), li.amount.amount_minor)
        for li in quote.next_invoice.lines
    ] == [
        ("INVOICE_LINE_KIND_BASE_FEE", 333),
        ("INVOICE_LINE_KIND_BASE_FEE", 3000),
        ("INVOICE_LINE_KIND_USAGE", 0),
    ]
    assert quote.next_invoice.subtotal.amount_minor == 3333
    # Nothing was changed by asking.
    got = await world.subs.GetSubscription(
        subs_api.GetSubscriptionRequest(subscription_id=sub.subscription_id), timeout=T
    )
    assert got.subscription.package_version_id == sub.package_version_id
    await world.end(sub)


async def test_refused_as_the_change_would_be(world: World) -> None:
    await world.move_clock(next_month_start(world.clock) + timedelta(days=1))
    sub = await world.subscribe("basic")
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        (
            world.change_request(sub, "basic", IMMEDIATE),
            grpc.StatusCode.FAILED_PRECONDITION,
            "PLAN_UNCHANGED",
        ),
        (
            world.change_request(sub, "euro", IMMEDIATE),
            grpc.StatusCode.FAILED_PRECONDITION,
            "PLAN_INCOMPATIBLE",
        ),
        (
            {**world.change_request(sub, "pro", IMMEDIATE), "org_id": "org_someone_else"},
            grpc.StatusCode.NOT_FOUND,
            "SUBSCRIPTION_NOT_FOUND",
        ),
        (
            {**world.change_request(sub, "pro", IMMEDIATE), "package_id": "", "timing": 9},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            {**world.change_request(sub, "pro", IMMEDIATE), "package_id": "pkg_nope"},
            grpc.StatusCode.NOT_FOUND,
            "PACKAGE_NOT_FOUND",
        ),
    ]
    for fields, code, reason in cases:
        errors = []
        for call in (
            world.invoicing.PreviewPlanChange(
                inv_api.PreviewPlanChangeRequest(**fields), timeout=T
            ),
            world.subs.ChangePlan(subs_api.ChangePlanRequest(**fields), timeout=T),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            errors.append(caught.value)
        quoted, changed = errors
        assert quoted.code() == changed.code() == code, fields
        q_reason, _, q_fields = details(quoted)
        c_reason, _, c_fields = details(changed)
        assert q_reason == c_reason == reason
        assert q_fields == c_fields
    await world.end(sub)


async def test_through_the_portal_route(world: World) -> None:
    suite = world.suite
    nobody = f"127.0.0.1:{free_port()}"
    settings_ = gateway_settings(
        catalog_addr=suite.address("catalog"),
        subscriptions_addr=suite.address("subscriptions"),
        usage_addr=suite.address("usage"),
        invoicing_addr=suite.address("invoicing"),
        payments_addr=nobody,
        audit_dir="",
    )
    await world.move_clock(next_month_start(world.clock) + timedelta(days=1))
    sub = await world.subscribe("basic")
    await world.move_clock(world.clock + timedelta(hours=5))
    path = f"/portal/billing/v1/subscriptions/{sub.subscription_id}:previewPlanChange"
    params = {
        "packageId": world.packages["pro"].package_id,
        "timing": "PLAN_CHANGE_TIMING_IMMEDIATE",
    }
    async with gateway_client(settings_) as http:
        r = await http.get(path, params=params, headers=portal_headers(sub.org_id))
        assert r.status_code == 200, r.text
        body = r.json()
        other = await http.get(path, params=params, headers=portal_headers("org_other"))
        assert other.status_code == 404, other.text
        unchanged = await http.get(
            path,
            params={**params, "packageId": world.packages["basic"].package_id},
            headers=portal_headers(sub.org_id),
        )
        assert unchanged.status_code == 400 and unchanged.json()["reason"] == "PLAN_UNCHANGED"
    grpc_quote = await world.quote(sub, "pro", IMMEDIATE)
    assert body["direction"] == "CHANGE_DIRECTION_UPGRADE"
    assert body["timing"] == "PLAN_CHANGE_TIMING_IMMEDIATE"
    assert body["dueNow"]["lines"][0]["amount"] == {
        "currencyCode": "USD",
        "amountMinor": str(grpc_quote.due_now.lines[0].amount.amount_minor),
    }
    assert body["nextInvoice"]["subtotal"]["amountMinor"] == str(
        grpc_quote.next_invoice.subtotal.amount_minor
    )
    await world.end(sub)
