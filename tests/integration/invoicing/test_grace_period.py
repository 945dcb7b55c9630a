"""With a grace period, a period's invoice waits as a draft (adjustable, no
number) and the worker finalizes it once the grace period ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tally.invoicing.v1 import invoicing_pb2 as api
from tally.invoicing.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb2
from tally.type.v1 import money_pb2

from tests.support.invoicing import (
    DEC,
    JAN,
    NOV,
    Harness,
    amounts,
    new_id,
    period_closed,
    running_invoicing,
    version,
    wait_for,
)

pytestmark = pytest.mark.integration
PLAN = version("graced", base_fee="20", in_advance=False)


@pytest.fixture(scope="module")
async def h(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_invoicing(
        database_url,
        nats_url,
        INVOICING_GRACE_PERIOD_SECONDS="1.5",
        INVOICING_FINALIZE_INTERVAL_SECONDS="0.2",
    ) as harness:
        await harness.publish_version(PLAN)
        yield harness


async def test_draft_waits_takes_adjustments_then_finalizes(h: Harness) -> None:
    org, sub = new_id("org"), new_id("sub")
    closed = period_closed(
        org, sub, NOV, DEC, [(PLAN, subs_pb2.SEGMENT_KIND_ACTIVE, NOV, DEC)], next_end=JAN
    )
    await h.publish(closed, sub)
    (draft,) = await h.wait_invoices(sub, 1)
    assert draft.state == pb.INVOICE_STATE_DRAFT and draft.number == ""
    assert draft.HasField("grace_period_end_time")
    adjusted = await h.stub.CreateInvoiceAdjustment(
        api.CreateInvoiceAdjustmentRequest(
            invoice_id=draft.invoice_id,
            description="Late usage",
            amount=money_pb2.Money(currency_code="USD", amount_minor=345),
            request_id="adj-1",
        ),
        timeout=5,
    )
    assert amounts(adjusted.invoice) == [
        ("INVOICE_LINE_KIND_BASE_FEE", 2000),
        ("INVOICE_LINE_KIND_ADJUSTMENT", 345),
    ]
    # The same request id replays the answer instead of adding a second line.
    again = await h.stub.CreateInvoiceAdjustment(
        api.CreateInvoiceAdjustmentRequest(
            invoice_id=draft.invoice_id,
            description="Late usage",
            amount=money_pb2.Money(currency_code="USD", amount_minor=345),
            request_id="adj-1",
        ),
        timeout=5,
    )
    assert again == adjusted

    async def finalized() -> bool:
        got = await h.stub.GetInvoice(api.GetInvoiceRequest(invoice_id=draft.invoice_id), timeout=5)
        return got.invoice.state == pb.INVOICE_STATE_FINALIZED

    await wait_for(finalized, timeout=15)
    got = await h.stub.GetInvoice(api.GetInvoiceRequest(invoice_id=draft.invoice_id), timeout=5)
    assert got.invoice.total.amount_minor == 2345
    assert got.invoice.sequence_number == 1
