"""Invoices from period close to paid, against real PostgreSQL and NATS.

Catalog, subscription and payment events are published to NATS the way their
producers do; usage aggregates come from a small real gRPC UsageService.
Every expected amount is computed by hand in the comments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from tally.catalog.v1 import resources_pb2 as cat
from tally.events.v1 import payments_events_pb2, subscriptions_events_pb2
from tally.invoicing.v1 import invoicing_pb2 as api
from tally.invoicing.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb2
from tally.type.v1 import money_pb2

from services.invoicing import handlers
from services.invoicing.consumers import closed_period
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.settings import Policy
from services.invoicing.usage_client import UsageReader
from services.kit.protoconv import to_timestamp
from tests.support.invoicing import (
    ACTIVE,
    DEC,
    FEB,
    JAN,
    NOV,
    TRIAL,
    Harness,
    amounts,
    charge,
    new_id,
    period_closed,
    running_invoicing,
    version,
    wait_for,
)
from tests.support.subscriptions import details

pytestmark = pytest.mark.integration


METERED = version(
    "metered",
    base_fee="30",
    in_advance=False,
    charges=[
        charge("api_calls", standard=cat.StandardProperties(unit_amount="0.01")),
        charge(
            "storage",
            graduated=cat.GraduatedProperties(
                tiers=[
                    cat.Tier(up_to="100", unit_amount="0.5"),
                    cat.Tier(unit_amount="0.25"),
                ]
            ),
        ),
        charge(
            "seats",
            volume=cat.VolumeProperties(
                tiers=[
                    cat.Tier(up_to="10", unit_amount="4"),
                    cat.Tier(unit_amount="3", flat_amount="1"),
                ]
            ),
        ),
        charge("sms", package=cat.PackageProperties(package_size=100, package_amount="5")),
        charge("payments", percentage=cat.PercentageProperties(rate="2.5", fixed_amount="0.3")),
    ],
)
BASIC = version("basic", base_fee="10")  # in advance
PRO = version("pro", base_fee="31")  # in advance, an upgrade from basic
ARREARS = version("arrears", base_fee="30", in_advance=False)
SMALL = version("small", base_fee="12", in_advance=False)  # a downgrade from arrears
TRIALED = version("trialed", base_fee="10", trial_days=14)
# Usage only (no base fee): the models METERED does not cover.
TIERED_FEES = version(
    "tiered-fees",
    base_fee="0",
    in_advance=False,
    charges=[
        charge(
            "volume_processed",
            graduated_percentage=cat.GraduatedPercentageProperties(
                tiers=[
                    cat.PercentageTier(up_to="1000", rate="2", flat_amount="0.5"),
                    cat.PercentageTier(rate="1", flat_amount="1"),
                ]
            ),
        ),
        charge(
            "seats",
            standard=cat.StandardProperties(unit_amount="2"),
            minimum_amount="25",
        ),
        charge(
            "idle_seats",
            standard=cat.StandardProperties(unit_amount="2"),
            minimum_amount="25",
        ),
    ],
)


@pytest.fixture(scope="module")
async def h(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_invoicing(database_url, nats_url) as harness:
        for v in (METERED, BASIC, PRO, ARREARS, SMALL, TRIALED, TIERED_FEES):
            await harness.publish_version(v)
        yield harness


async def test_usage_of_every_model_base_fee_in_arrears_and_tax(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    await h.stub.SetTaxRate(api.SetTaxRateRequest(org_id=org, tax_rate="20"), timeout=5)
    h.usage.set(sub, "api_calls", NOV, "1234")  # 1234 x 0.01 = 12.34
    h.usage.set(sub, "storage", NOV, "150")  # 100 x 0.5 + 50 x 0.25 = 62.50
    h.usage.set(sub, "seats", NOV, "12")  # volume: 12 x 3 + 1 = 37.00
    h.usage.set(sub, "sms", NOV, "250")  # 3 blocks x 5 = 15.00
    h.usage.set_events(sub, "payments", NOV, ["100", "50"])  # 2.8 + 1.55 = 4.35
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(METERED, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    (inv,) = await h.wait_invoices(sub, 1)
    assert amounts(inv) == [
        ("INVOICE_LINE_KIND_BASE_FEE", 3000),
        ("INVOICE_LINE_KIND_USAGE", 1234),
        ("INVOICE_LINE_KIND_USAGE", 6250),
        ("INVOICE_LINE_KIND_USAGE", 3700),
        ("INVOICE_LINE_KIND_USAGE", 1500),
        ("INVOICE_LINE_KIND_USAGE", 435),
        ("INVOICE_LINE_KIND_TAX", 3224),  # 20 % of 16119 = 3223.8
    ]
    assert inv.subtotal.amount_minor == 16119
    assert inv.total.amount_minor == 16119 + 3224 == inv.amount_due.amount_minor
    assert inv.state == pb.INVOICE_STATE_FINALIZED
    assert inv.number and inv.sequence_number == 1
    assert inv.lines[2].details  # tier-by-tier breakdown kept

    async def published() -> bool:
        return [n for n, _ in await h.events(inv.invoice_id)] == ["invoice.finalized"]

    await wait_for(published)
    html = await h.stub.RenderInvoice(
        api.RenderInvoiceRequest(invoice_id=inv.invoice_id), timeout=5
    )
    assert html.document.content_type.startswith("text/html")
    assert inv.number.encode() in html.document.data and b"193.43 USD" in html.document.data


async def test_graduated_percentage_and_minimum_commitment(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    # graduated_percentage over the events' total 600 + 700.55 = 1300.55:
    # 1000 x 2 % + 0.50 = 20.50, then 300.55 x 1 % + 1.00 = 4.0055; the line is
    # 24.5055, rounded once -> 24.51 (not 20.50 + 4.01 tier by tier).
    h.usage.set_events(sub, "volume_processed", NOV, ["600", "700.55"])
    # Minimum commitment 25.00: 7 seats x 2 = 14.00 plus an 11.00 true-up; no
    # usage at all still pays the minimum.
    h.usage.set(sub, "seats", NOV, "7")
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(TIERED_FEES, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    (inv,) = await h.wait_invoices(sub, 1)
    assert amounts(inv) == [
        ("INVOICE_LINE_KIND_USAGE", 2451),
        ("INVOICE_LINE_KIND_USAGE", 2500),
        ("INVOICE_LINE_KIND_USAGE", 2500),
    ]  # no tax rate, no TAX line
    pct, seats, idle = inv.lines[0], inv.lines[1], inv.lines[2]
    assert pct.quantity == "1300.55"
    assert pct.unrounded_amount == "24.5055"
    assert [(s.tier, s.amount) for s in pct.details] == [(1, "20.5"), (2, "4.0055")]
    assert seats.quantity == "7" and any("minimum" in s.description for s in seats.details)
    assert idle.quantity == "0" and any("minimum" in s.description for s in idle.details)
    assert inv.subtotal.amount_minor == inv.total.amount_minor == 2451 + 2500 + 2500
    assert inv.state == pb.INVOICE_STATE_FINALIZED


async def test_in_advance_trial_upgrade_and_redelivery(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    # Trial Nov 1 - Nov 15, then active: Nov was never invoiced in advance, so
    # its active part is billed in arrears (10 x 16/30 days = 5.333 -> 5.33);
    # December's fee in advance (10.00).
    mid = datetime(2026, 11, 15, tzinfo=UTC)
    first = period_closed(
        org, sub, NOV, DEC, [(TRIALED, TRIAL, NOV, mid), (TRIALED, ACTIVE, mid, DEC)], next_end=JAN
    )
    envelope = await h.publish(first, sub)
    (nov,) = await h.wait_invoices(sub, 1)
    assert amounts(nov) == [
        ("INVOICE_LINE_KIND_BASE_FEE", 533),
        ("INVOICE_LINE_KIND_BASE_FEE", 1000),
    ]
    assert nov.lines[0].proration.seconds_used == 16 * 86400
    assert nov.lines[0].proration.seconds_in_period == 30 * 86400
    # Upgrade on Dec 11 to pro (31/month, in advance): credit 21 unused days of
    # the 10.00 advanced (-10 x 21/31 = -6.774 -> -6.77), charge pro for 21 of 31
    # days (21.00), and January's pro fee in advance (31.00).
    change = datetime(2026, 12, 11, tzinfo=UTC)
    second = period_closed(
        org,
        sub,
        DEC,
        JAN,
        [(TRIALED, ACTIVE, DEC, change), (PRO, ACTIVE, change, JAN)],
        next_end=FEB,
        next_version=PRO,
    )
    await h.publish(second, sub)
    invoices = await h.wait_invoices(sub, 2)
    dec = invoices[1]
    assert amounts(dec) == [
        ("INVOICE_LINE_KIND_BASE_FEE", 2100),
        ("INVOICE_LINE_KIND_PRORATION_CREDIT", -677),
        ("INVOICE_LINE_KIND_BASE_FEE", 3100),
    ]
    assert dec.total.amount_minor == 4523
    assert (nov.sequence_number, dec.sequence_number) == (1, 2)
    # Redelivery: the same message (inbox) and a replay with a new id (the
    # unique index) both create nothing.
    await h.bus.publish(envelope)
    await h.publish(first, sub)
    await asyncio.sleep(1.0)
    assert len(await h.invoices(sub)) == 2
    finalized = [
        m
        for n, m in await h.events()
        if n == "invoice.finalized" and m.invoice.subscription_id == sub  # type: ignore[attr-defined]
    ]
    assert len(finalized) == 2


async def test_downgrade_in_arrears_prorates_both_versions(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    cut = datetime(2026, 11, 21, tzinfo=UTC)
    event = period_closed(
        org,
        sub,
        NOV,
        DEC,
        [(ARREARS, ACTIVE, NOV, cut), (SMALL, ACTIVE, cut, DEC)],
        next_end=JAN,
        next_version=SMALL,
    )
    await h.publish(event, sub)
    (inv,) = await h.wait_invoices(sub, 1)
    # 30 x 20/30 days = 20.00; 12 x 10/30 days = 4.00
    assert amounts(inv) == [
        ("INVOICE_LINE_KIND_BASE_FEE", 2000),
        ("INVOICE_LINE_KIND_BASE_FEE", 400),
    ]
    assert inv.lines[1].proration.full_amount == "12"


async def _paid(h: Harness, inv: pb.Invoice) -> None:
    await h.publish(
        payments_events_pb2.PaymentSucceededEvent(
            payment_id=new_id("pay"),
            org_id=inv.org_id,
            invoice_id=inv.invoice_id,
            subscription_id=inv.subscription_id,
            amount=inv.amount_due,
        ),
        inv.invoice_id,
    )

    async def check() -> bool:
        got = await h.stub.GetInvoice(api.GetInvoiceRequest(invoice_id=inv.invoice_id), timeout=5)
        return got.invoice.state == pb.INVOICE_STATE_PAID

    await wait_for(check)


async def test_credit_memos_payment_and_credit_balance(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(ARREARS, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    (inv,) = await h.wait_invoices(sub, 1)
    line = inv.lines[0]
    usd = lambda minor: money_pb2.Money(currency_code="USD", amount_minor=minor)  # noqa: E731
    # Above what remains of the line: refused, nothing changes.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.IssueCreditMemo(
            api.IssueCreditMemoRequest(
                invoice_id=inv.invoice_id,
                lines=[pb.CreditMemoLine(invoice_line_id=line.line_id, amount=usd(3001))],
            ),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0] == "CREDIT_EXCEEDS_REMAINING"
    # 5.00 off the unpaid invoice: the amount due drops to 25.00.
    memo = await h.stub.IssueCreditMemo(
        api.IssueCreditMemoRequest(
            invoice_id=inv.invoice_id,
            lines=[pb.CreditMemoLine(invoice_line_id=line.line_id, amount=usd(500))],
            reason=pb.CREDIT_MEMO_REASON_PRODUCT_UNSATISFACTORY,
        ),
        timeout=5,
    )
    assert memo.credit_memo.settlement == pb.CREDIT_MEMO_SETTLEMENT_REDUCE_AMOUNT_DUE
    assert memo.credit_memo.number == f"{inv.number}-CM1"
    assert memo.invoice.amount_due.amount_minor == 2500
    assert memo.invoice.amount_credited.amount_minor == 500
    await _paid(h, memo.invoice)
    # Paid: a memo becomes credit balance, which the next invoice consumes.
    paid_memo = await h.stub.IssueCreditMemo(
        api.IssueCreditMemoRequest(
            invoice_id=inv.invoice_id, lines=[pb.CreditMemoLine(amount=usd(700))]
        ),
        timeout=5,
    )
    assert paid_memo.credit_memo.settlement == pb.CREDIT_MEMO_SETTLEMENT_CREDIT_BALANCE
    balance = await h.stub.GetCreditBalance(api.GetCreditBalanceRequest(org_id=org), timeout=5)
    assert balance.credit_balance.balance.amount_minor == 700
    # Voiding a paid invoice is refused and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.VoidInvoice(api.VoidInvoiceRequest(invoice_id=inv.invoice_id), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0] == "INVOICE_ALREADY_PAID"
    await h.publish(
        period_closed(org, sub, DEC, JAN, [(ARREARS, ACTIVE, DEC, JAN)], next_end=FEB), sub
    )
    invoices = await h.wait_invoices(sub, 2)
    assert invoices[1].credit_applied.amount_minor == 700
    assert invoices[1].total.amount_minor == 3000 - 700
    balance = await h.stub.GetCreditBalance(api.GetCreditBalanceRequest(org_id=org), timeout=5)
    assert balance.credit_balance.balance.amount_minor == 0
    memos = await h.stub.ListCreditMemos(api.ListCreditMemosRequest(org_id=org), timeout=5)
    assert len(memos.credit_memos) == 2


async def test_void_then_finalize_is_refused_and_uncollectible(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(ARREARS, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    (inv,) = await h.wait_invoices(sub, 1)
    voided = await h.stub.VoidInvoice(
        api.VoidInvoiceRequest(invoice_id=inv.invoice_id, reason="duplicate"), timeout=5
    )
    assert voided.invoice.state == pb.INVOICE_STATE_VOID
    assert voided.invoice.number == inv.number  # numbers stay: no gap
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.FinalizeInvoice(
            api.FinalizeInvoiceRequest(invoice_id=inv.invoice_id), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0] == "INVOICE_NOT_DRAFT"
    got = await h.stub.GetInvoice(api.GetInvoiceRequest(invoice_id=inv.invoice_id), timeout=5)
    assert got.invoice == voided.invoice
    await h.publish(
        period_closed(org, sub, DEC, JAN, [(ARREARS, ACTIVE, DEC, JAN)], next_end=FEB), sub
    )
    second = (await h.wait_invoices(sub, 2))[1]
    marked = await h.stub.MarkInvoiceUncollectible(
        api.MarkInvoiceUncollectibleRequest(invoice_id=second.invoice_id), timeout=5
    )
    assert marked.invoice.state == pb.INVOICE_STATE_UNCOLLECTIBLE
    assert marked.invoice.amount_due.amount_minor == 0

    async def published() -> bool:
        names = [n for n, _ in await h.events(second.invoice_id)]
        return names == ["invoice.finalized", "invoice.marked_uncollectible"]

    await wait_for(published)


async def test_gapless_numbers_under_concurrent_finalization(h: Harness) -> None:
    org = new_id("org")
    ctx = h.runtime.context
    assert ctx is not None
    drafts = []
    for _ in range(8):
        sub = new_id("sub")
        async with InvoicingUnitOfWork(ctx.database, ctx.outbox) as uow:
            inv, created = await handlers.close_period(
                uow,
                UsageReader(h.usage_address, 5),
                Policy(grace_period=timedelta(hours=1)),
                subscription_id=sub,
                org_id=org,
                currency="USD",
                period=closed_period(
                    period_closed(org, sub, NOV, DEC, [(ARREARS, ACTIVE, NOV, DEC)], next_end=JAN)
                ),
                usage_version_id=ARREARS.package_version_id,
                now=datetime.now(UTC),
            )
            await uow.commit()
        assert created and inv.number == ""
        drafts.append(inv.invoice_id)
    # An adjustment on a draft is folded in (drafts only).
    adjusted = await h.stub.CreateInvoiceAdjustment(
        api.CreateInvoiceAdjustmentRequest(
            invoice_id=drafts[0],
            description="Goodwill",
            amount=money_pb2.Money(currency_code="USD", amount_minor=-250),
        ),
        timeout=5,
    )
    assert adjusted.invoice.total.amount_minor == 2750
    replies = await asyncio.gather(
        *(
            h.stub.FinalizeInvoice(api.FinalizeInvoiceRequest(invoice_id=i), timeout=10)
            for i in drafts
        )
    )
    assert sorted(r.invoice.sequence_number for r in replies) == list(range(1, 9))
    assert len({r.invoice.number for r in replies}) == 8
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.CreateInvoiceAdjustment(
            api.CreateInvoiceAdjustmentRequest(
                invoice_id=drafts[0],
                description="late",
                amount=money_pb2.Money(currency_code="USD", amount_minor=100),
            ),
            timeout=5,
        )
    assert details(err.value)[0] == "INVOICE_NOT_DRAFT"
    listed = await h.stub.ListInvoices(api.ListInvoicesRequest(org_id=org, page_size=5), timeout=5)
    assert len(listed.invoices) == 5 and listed.next_page_token
    rest = await h.stub.ListInvoices(
        api.ListInvoicesRequest(org_id=org, page_size=5, page_token=listed.next_page_token),
        timeout=5,
    )
    assert len(rest.invoices) == 3 and not rest.next_page_token


async def test_billing_profile_and_bad_input(h: Harness) -> None:
    org = new_id("org")
    reply = await h.stub.UpdateBillingProfile(
        api.UpdateBillingProfileRequest(
            org_id=org,
            billing_profile=pb.BillingProfile(
                legal_name="Acme SAS",
                invoice_email="billing@acme.test",
                address=pb.PostalAddress(line1="1 rue X", city="Paris", country_code="FR"),
            ),
        ),
        timeout=5,
    )
    assert reply.billing_profile.legal_name == "Acme SAS"
    assert reply.billing_profile.tax_rate == "0"
    got = await h.stub.GetBillingProfile(api.GetBillingProfileRequest(org_id=org), timeout=5)
    assert got.billing_profile.address.city == "Paris"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.SetTaxRate(api.SetTaxRateRequest(org_id=org, tax_rate="120"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tax_rate" in details(err.value)[2]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetInvoice(api.GetInvoiceRequest(invoice_id="inv_nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value)[0] == "INVOICE_NOT_FOUND"


def _changed(
    org: str, sub: str, old: cat.PackageVersion, new: cat.PackageVersion, at: datetime
) -> subscriptions_events_pb2.SubscriptionChangedEvent:
    return subscriptions_events_pb2.SubscriptionChangedEvent(
        subscription_id=sub,
        org_id=org,
        previous_package_version_id=old.package_version_id,
        package_version_id=new.package_version_id,
        timing=subs_pb2.PLAN_CHANGE_TIMING_IMMEDIATE,
        effective_time=to_timestamp(at),
        subscription=subs_pb2.Subscription(
            subscription_id=sub,
            org_id=org,
            package_version_id=new.package_version_id,
            currency_code="USD",
            current_period_start_time=to_timestamp(DEC),
            current_period_end_time=to_timestamp(JAN),
            update_time=to_timestamp(at),
        ),
    )


async def test_plan_change_now_invoices_at_once_and_the_close_trues_up(h: Harness) -> None:
    at = datetime(2026, 12, 11, tzinfo=UTC)
    # Upgrade basic (10, advanced for December) -> pro (31) on Dec 11: credit
    # -10 x 21/31 = -6.77, charge 31 x 21/31 = 21.00, at once.
    org, sub = new_id("org"), new_id("sub")
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(BASIC, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    await h.wait_invoices(sub, 1)
    envelope = await h.publish(_changed(org, sub, BASIC, PRO, at), sub)
    change = (await h.wait_invoices(sub, 2))[1]
    assert change.reason == pb.INVOICE_REASON_PLAN_CHANGE
    assert amounts(change) == [
        ("INVOICE_LINE_KIND_PRORATION_CREDIT", -677),
        ("INVOICE_LINE_KIND_BASE_FEE", 2100),
    ]
    assert change.total.amount_minor == 1423 and change.state == pb.INVOICE_STATE_FINALIZED
    await h.publish(envelope.decode(), sub)  # replayed with a new id: nothing new
    # December closes: both versions were billed exactly; only January's pro fee.
    await h.publish(
        period_closed(
            org,
            sub,
            DEC,
            JAN,
            [(BASIC, ACTIVE, DEC, at), (PRO, ACTIVE, at, JAN)],
            next_end=FEB,
            next_version=PRO,
        ),
        sub,
    )
    dec = [i for i in await h.wait_invoices(sub, 3) if i.reason == pb.INVOICE_REASON_PERIOD_CLOSE]
    assert amounts(dec[-1]) == [("INVOICE_LINE_KIND_BASE_FEE", 3100)]
    assert len(await h.invoices(sub)) == 3

    # Downgrade pro (31, advanced) -> basic (10) on Dec 11: -21.00 + 6.77 is a
    # credit of 14.23: the invoice is 0 and the org's balance takes the rest.
    org, sub = new_id("org"), new_id("sub")
    await h.publish(period_closed(org, sub, NOV, DEC, [(PRO, ACTIVE, NOV, DEC)], next_end=JAN), sub)
    await h.wait_invoices(sub, 1)
    await h.publish(_changed(org, sub, PRO, BASIC, at), sub)
    change = (await h.wait_invoices(sub, 2))[1]
    assert amounts(change) == [
        ("INVOICE_LINE_KIND_PRORATION_CREDIT", -2100),
        ("INVOICE_LINE_KIND_BASE_FEE", 677),
    ]
    assert change.total.amount_minor == 0 and change.state == pb.INVOICE_STATE_PAID
    balance = await h.stub.GetCreditBalance(api.GetCreditBalanceRequest(org_id=org), timeout=5)
    assert balance.credit_balance.balance.amount_minor == 1423


async def test_cancel_now_credits_the_unused_advance(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(BASIC, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    await h.wait_invoices(sub, 1)
    # Canceled on Dec 11: the final period closes at once, its segments stop
    # there; 21 of 31 advanced days come back (-6.77) as credit balance.
    at = datetime(2026, 12, 11, tzinfo=UTC)
    await h.publish(period_closed(org, sub, DEC, JAN, [(BASIC, ACTIVE, DEC, at)], ended=True), sub)
    final = (await h.wait_invoices(sub, 2))[1]
    assert amounts(final) == [("INVOICE_LINE_KIND_PRORATION_CREDIT", -677)]
    assert final.total.amount_minor == 0 and final.state == pb.INVOICE_STATE_PAID
    balance = await h.stub.GetCreditBalance(api.GetCreditBalanceRequest(org_id=org), timeout=5)
    assert balance.credit_balance.balance.amount_minor == 677


def _lines(inv: pb.Invoice) -> list[tuple[str, int, str, int]]:
    """What a preview and a close must agree on: kind, amount, version, seconds."""
    return [
        (
            pb.InvoiceLineKind.Name(li.kind),
            li.amount.amount_minor,
            li.package_version_id,
            li.proration.seconds_used,
        )
        for li in inv.lines
    ]


async def _preview(h: Harness, org: str, sub: str) -> pb.Invoice:
    try:
        reply = await h.stub.PreviewInvoice(
            api.PreviewInvoiceRequest(org_id=org, subscription_id=sub), timeout=5
        )
    except grpc.aio.AioRpcError as exc:
        # The projection has not applied subscription.changed yet.
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return pb.Invoice()
    return reply.invoice


async def test_preview_reflects_a_plan_change_now_and_the_close_matches_it(h: Harness) -> None:
    at = datetime(2026, 12, 11, tzinfo=UTC)
    day = 86_400
    # Arrears: small (12) -> arrears (30) on Dec 11 invoices nothing at once;
    # the preview already shows the two prorated segments December's close
    # will bill: 12 x 10/31 = 3.870... -> 3.87 and 30 x 21/31 = 20.322... -> 20.32.
    org, sub = new_id("org"), new_id("sub")
    h.usage.set(sub, "api_calls", DEC, "5")  # not a charge of these versions: ignored
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(SMALL, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    await h.wait_invoices(sub, 1)
    await h.publish(_changed(org, sub, SMALL, ARREARS, at), sub)
    wanted = [
        ("INVOICE_LINE_KIND_BASE_FEE", 387, SMALL.package_version_id, 10 * day),
        ("INVOICE_LINE_KIND_BASE_FEE", 2032, ARREARS.package_version_id, 21 * day),
    ]

    async def previewed() -> bool:
        return _lines(await _preview(h, org, sub)) == wanted

    await wait_for(previewed)
    preview = await _preview(h, org, sub)
    assert preview.total.amount_minor == 2419 and not preview.invoice_id
    await h.publish(
        period_closed(
            org,
            sub,
            DEC,
            JAN,
            [(SMALL, ACTIVE, DEC, at), (ARREARS, ACTIVE, at, JAN)],
            next_end=FEB,
            next_version=ARREARS,
        ),
        sub,
    )
    closed = (await h.wait_invoices(sub, 2))[1]
    assert _lines(closed) == wanted
    assert closed.total.amount_minor == preview.total.amount_minor

    # In advance: basic (10) -> pro (31) on Dec 11 billed both parts at once
    # (-6.77 + 21.00); what remains for the close is January's pro fee only.
    # (One version over the whole period would have shown -10.00 for basic's
    # "unused" 31 days and +10.00 for pro's "missing" 10.)
    org, sub = new_id("org"), new_id("sub")
    await h.publish(
        period_closed(org, sub, NOV, DEC, [(BASIC, ACTIVE, NOV, DEC)], next_end=JAN), sub
    )
    await h.wait_invoices(sub, 1)
    await h.publish(_changed(org, sub, BASIC, PRO, at), sub)
    await h.wait_invoices(sub, 2)
    # A whole period's fee is not prorated: no proration seconds on the line.
    wanted = [("INVOICE_LINE_KIND_BASE_FEE", 3100, PRO.package_version_id, 0)]

    async def previewed_pro() -> bool:
        return _lines(await _preview(h, org, sub)) == wanted

    await wait_for(previewed_pro)
    await h.publish(
        period_closed(
            org,
            sub,
            DEC,
            JAN,
            [(BASIC, ACTIVE, DEC, at), (PRO, ACTIVE, at, JAN)],
            next_end=FEB,
            next_version=PRO,
        ),
        sub,
    )
    closed = [
        i for i in await h.wait_invoices(sub, 3) if i.reason == pb.INVOICE_REASON_PERIOD_CLOSE
    ][-1]
    assert _lines(closed) == wanted and closed.total.amount_minor == 3100
