"""Period closes applied concurrently by the invoicing consumer: one org's
subscriptions close together, replays included, and every period is invoiced
once with gapless numbers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tally.invoicing.v1 import invoicing_pb2 as api
from tally.invoicing.v1 import resources_pb2 as pb

from tests.support.invoicing import (
    ACTIVE,
    DEC,
    JAN,
    NOV,
    Harness,
    new_id,
    period_closed,
    running_invoicing,
    version,
    wait_for,
)

pytestmark = pytest.mark.integration

PLAN = version("concurrent", base_fee="20", in_advance=False)
SUBSCRIPTIONS = 12


@pytest.fixture(scope="module")
async def h(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_invoicing(database_url, nats_url, CONSUMER_CONCURRENCY="4") as harness:
        await harness.publish_version(PLAN)
        yield harness


async def org_invoices(h: Harness, org: str) -> list[pb.Invoice]:
    reply = await h.stub.ListInvoices(api.ListInvoicesRequest(org_id=org, page_size=100), timeout=5)
    return list(reply.invoices)


async def drained(h: Harness) -> bool:
    (consumer,) = [c for c in h.runtime.consumers if c.sub.durable == "subscriptions"]
    info = await h.bus.js.consumer_info(consumer.sub.stream, consumer.consumer_name)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_one_orgs_periods_close_concurrently_once_each_with_gapless_numbers(
    h: Harness,
) -> None:
    (consumer,) = [c for c in h.runtime.consumers if c.sub.durable == "subscriptions"]
    assert consumer.sub.concurrency == 4
    org = new_id("org")
    subs = [new_id("sub") for _ in range(SUBSCRIPTIONS)]
    for sub in subs:
        event = period_closed(org, sub, NOV, DEC, [(PLAN, ACTIVE, NOV, DEC)], next_end=JAN)
        await h.publish(event, sub)
    for sub in subs[:3]:
        # A replay under a new event id: only the unique period index stops it.
        event = period_closed(org, sub, NOV, DEC, [(PLAN, ACTIVE, NOV, DEC)], next_end=JAN)
        await h.publish(event, sub)

    async def all_invoiced() -> bool:
        return len(await org_invoices(h, org)) >= SUBSCRIPTIONS

    await wait_for(all_invoiced)
    await wait_for(lambda: drained(h))
    invoices = await org_invoices(h, org)
    assert sorted(i.subscription_id for i in invoices) == sorted(subs)
    assert sorted(i.sequence_number for i in invoices) == list(range(1, SUBSCRIPTIONS + 1))
    assert len({i.number for i in invoices}) == SUBSCRIPTIONS
    assert {i.state for i in invoices} == {pb.INVOICE_STATE_FINALIZED}
    assert {i.total.amount_minor for i in invoices} == {2000}
