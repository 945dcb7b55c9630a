"""A close with no grace period finalizes the invoice it just built without
storing a draft and reading it back: what it answers, stores and emits is what
the draft-then-finalize path gives, and a close that loses the race for its
period gives its invoice number back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from tally.catalog.v1 import resources_pb2 as cat
from tally.events.v1 import invoicing_events_pb2 as ev
from tally.invoicing.v1 import resources_pb2 as pb

from services.invoicing import domain as d
from services.invoicing import handlers, protomap
from services.invoicing.consumers import closed_period
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.settings import Policy
from services.invoicing.usage_client import UsageReader
from tests.support.invoicing import (
    ACTIVE,
    DEC,
    FEB,
    JAN,
    NOV,
    Harness,
    charge,
    new_id,
    period_closed,
    running_invoicing,
    version,
    wait_for,
)

pytestmark = pytest.mark.integration

PLAN = version(
    "finalize-at-close",
    base_fee="30",
    in_advance=False,
    charges=[
        charge("api_calls", standard=cat.StandardProperties(unit_amount="0.01")),
        charge("payments", percentage=cat.PercentageProperties(rate="2.5", fixed_amount="0.3")),
    ],
)
NOW = datetime(2026, 12, 1, 0, 5, 7, 123456, tzinfo=UTC)
AT_ONCE = Policy(grace_period=timedelta(0), payment_terms=timedelta(days=14))
WITH_GRACE = Policy(grace_period=timedelta(hours=1), payment_terms=timedelta(days=14))


@pytest.fixture(scope="module")
async def h(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_invoicing(database_url, nats_url) as harness:
        await harness.publish_version(PLAN)

        async def projected() -> bool:
            async with _uow(harness) as uow:
                return bool(await uow.repo.version_rows({PLAN.package_version_id}))

        await wait_for(projected)
        yield harness


def _uow(h: Harness) -> InvoicingUnitOfWork:
    ctx = h.runtime.context
    assert ctx is not None
    return InvoicingUnitOfWork(ctx.database, ctx.outbox)


async def _prepare(h: Harness, org: str, tax_rate: str | None, credit: int) -> None:
    async with _uow(h) as uow:
        if tax_rate is not None:
            await handlers.update_profile(
                uow,
                org,
                {
                    "legal_name": "Acme",
                    "invoice_email": "billing@acme.test",
                    "tax_rate": Decimal(tax_rate),
                },
                NOW,
            )
        if credit:
            await uow.repo.add_balance(org, "USD", credit, NOW)
        await uow.commit()


async def _close(
    h: Harness,
    org: str,
    sub: str,
    policy: Policy,
    period: tuple[datetime, datetime, datetime] = (NOV, DEC, JAN),
) -> tuple[d.Invoice, bool, list[Any]]:
    """Close (start, end) with the next period ending at the third instant."""
    async with _uow(h) as uow:
        inv, created = await _close_in(uow, h, org, sub, policy, period)
        emitted = [e.decode() for e in uow.emitted if e.subject.endswith("invoice.finalized")]
        await uow.commit()
    return inv, created, emitted


async def _close_in(
    uow: InvoicingUnitOfWork,
    h: Harness,
    org: str,
    sub: str,
    policy: Policy,
    period: tuple[datetime, datetime, datetime] = (NOV, DEC, JAN),
) -> tuple[d.Invoice, bool]:
    """``close_period`` inside ``uow``, left uncommitted."""
    start, end, next_end = period
    return await handlers.close_period(
        uow,
        UsageReader(h.usage_address, 5),
        policy,
        subscription_id=sub,
        org_id=org,
        currency="USD",
        period=closed_period(
            period_closed(org, sub, start, end, [(PLAN, ACTIVE, start, end)], next_end=next_end)
        ),
        usage_version_id=PLAN.package_version_id,
        now=NOW,
    )


async def _stored(h: Harness, invoice_id: str) -> d.Invoice:
    async with _uow(h) as uow:
        inv = await uow.repo.invoice(invoice_id)
    assert inv is not None
    return inv


def _anonymous(inv: pb.Invoice) -> pb.Invoice:
    """The invoice without what differs between two orgs' runs by construction."""
    out = pb.Invoice()
    out.CopyFrom(inv)
    out.invoice_id = out.org_id = out.subscription_id = ""
    out.billing_profile.org_id = ""
    out.number = out.number.split("-")[-1]
    for line in out.lines:
        line.line_id = ""
    return out


@pytest.mark.parametrize(
    ("tax_rate", "credit"),
    [(None, 0), ("8.25", 0), ("20", 1_000), ("0", 1_000_000)],
    ids=["plain", "taxed", "part-credit", "paid-by-credit"],
)
async def test_finalizing_at_the_close_matches_finalizing_the_stored_draft(
    h: Harness, tax_rate: str | None, credit: int
) -> None:
    fast_org, slow_org = new_id("org"), new_id("org")
    fast_sub, slow_sub = new_id("sub"), new_id("sub")
    for org, sub in ((fast_org, fast_sub), (slow_org, slow_sub)):
        await _prepare(h, org, tax_rate, credit)
        h.usage.set(sub, "api_calls", NOV, "1234")
        h.usage.set_events(sub, "payments", NOV, ["10", "25.5"])

    fast, created, events = await _close(h, fast_org, fast_sub, AT_ONCE)
    assert created and fast.state is not d.InvoiceState.DRAFT
    # What it answers and emits is what it stored.
    stored = await _stored(h, fast.invoice_id)
    assert protomap.invoice_pb(fast) == protomap.invoice_pb(stored)
    (event,) = events
    assert event.invoice == protomap.invoice_pb(stored)

    # The other path: a draft stored, then finalized from the database.
    draft, created, _ = await _close(h, slow_org, slow_sub, WITH_GRACE)
    assert created and draft.state is d.InvoiceState.DRAFT
    async with _uow(h) as uow:
        slow = await handlers.finalize(uow, draft.invoice_id, NOW, AT_ONCE)
        (slow_event,) = [e.decode() for e in uow.emitted if e.subject.endswith("invoice.finalized")]
        await uow.commit()
    assert _anonymous(protomap.invoice_pb(fast)) == _anonymous(protomap.invoice_pb(slow))
    assert isinstance(slow_event, ev.InvoiceFinalizedEvent)
    assert (event.customer_email, event.customer_name) == (
        slow_event.customer_email,
        slow_event.customer_name,
    )
    async with _uow(h) as uow:
        balances = [await handlers.credit_balance(uow, org, "USD") for org in (fast_org, slow_org)]
    assert balances[0][0] == balances[1][0]


async def test_a_close_that_loses_its_period_gives_its_number_back(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    h.usage.set(sub, "api_calls", NOV, "100")
    async with _uow(h) as first:
        won, created = await _close_in(first, h, org, sub, AT_ONCE)
        assert created and won.sequence_number == 1
        # A second close of the same period starts before the first commits: it
        # sees no invoice, then waits on the org's counter row.
        second = asyncio.create_task(_close(h, org, sub, AT_ONCE))
        await asyncio.sleep(0.5)
        assert not second.done()
        await first.commit()
    lost, created, events = await second
    assert not created and events == []
    assert (lost.invoice_id, lost.sequence_number) == (won.invoice_id, 1)
    nxt, created, _ = await _close(h, org, sub, AT_ONCE, (DEC, JAN, FEB))
    assert created and nxt.sequence_number == 2  # no gap
