"""The money path through four real services: the catalog publishes, an org
subscribes, usage is recorded (once), the billing clock closes the period,
invoicing reads the aggregate from the real usage service over gRPC, builds
and finalizes the invoice; a payment event marks it paid."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from tally.catalog.v1 import catalog_pb2_grpc
from tally.events.v1 import payments_events_pb2
from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc
from tally.invoicing.v1 import resources_pb2 as inv_pb
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from tally.usage.v1 import resources_pb2 as usage
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from services.kit import migrations
from services.kit.bus import EventBus
from services.kit.events import EventEnvelope
from services.kit.protoconv import to_timestamp
from services.kit.streams import producer_stream
from tests.integration.test_catalog_subscriptions_usage import eventually
from tests.support.catalog import publish_per_call_package
from tests.support.services import service_in_process

pytestmark = pytest.mark.integration
TIMEOUT = 5
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
async def suite(database_url: str, nats_url: str) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    for service in ("catalog", "subscriptions", "usage", "invoicing"):
        await migrations.upgrade_async(service, database_url)
    mp = pytest.MonkeyPatch()
    mp.setenv("USAGE_AGGREGATED_INTERVAL_SECONDS", "0.2")
    mp.setenv("SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS", "0")
    mp.setenv("INVOICING_FINALIZE_INTERVAL_SECONDS", "0")
    try:
        async with (
            service_in_process("catalog", database_url, nats_url, outbox_poll_seconds=0.05) as c,
            service_in_process(
                "subscriptions", database_url, nats_url, outbox_poll_seconds=0.05
            ) as s,
            service_in_process("usage", database_url, nats_url, outbox_poll_seconds=0.05) as u,
        ):
            mp.setenv("INVOICING_USAGE_ADDR", f"127.0.0.1:{u.port}")
            async with service_in_process(
                "invoicing", database_url, nats_url, outbox_poll_seconds=0.05
            ) as i:
                channels = {
                    name: grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}")
                    for name, rt in (
                        ("catalog", c),
                        ("subscriptions", s),
                        ("usage", u),
                        ("invoicing", i),
                    )
                }
                yield channels
                for channel in channels.values():
                    await channel.close()
    finally:
        mp.undo()


async def test_period_close_to_paid_invoice(
    suite: dict[str, grpc.aio.Channel], nats_url: str
) -> None:
    catalog_api = catalog_pb2_grpc.CatalogServiceStub(suite["catalog"])
    subscriptions_api = subscriptions_pb2_grpc.SubscriptionsServiceStub(suite["subscriptions"])
    usage_api = usage_pb2_grpc.UsageServiceStub(suite["usage"])
    invoicing_api = invoicing_pb2_grpc.InvoicingServiceStub(suite["invoicing"])
    org = f"org_{uuid.uuid4().hex[:8]}"

    _, package = await publish_per_call_package(catalog_api, timeout=TIMEOUT)
    created = await eventually(
        lambda: subscriptions_api.CreateSubscription(
            subscriptions_pb2.CreateSubscriptionRequest(
                org_id=org,
                package_id=package.package_id,
                start_time=to_timestamp(NOV),
                request_id=f"sub-{org}",
            ),
            timeout=TIMEOUT,
        ),
        lambda reply: bool(reply.subscription.subscription_id),
    )
    sid = created.subscription.subscription_id

    # Three calls in November, one of them sent twice: counted once.
    events = [
        usage.UsageEvent(
            org_id=org,
            metric_code="api_calls",
            idempotency_key=f"call-{i}",
            event_time=to_timestamp(datetime(2026, 11, 10, tzinfo=UTC)),
        )
        for i in (1, 2, 3)
    ]
    batch = usage_pb2.RecordUsageBatchRequest(events=[*events, events[0]])
    await eventually(
        lambda: usage_api.RecordUsageBatch(batch, timeout=TIMEOUT),
        lambda r: all(res.status != usage.USAGE_EVENT_STATUS_REJECTED for res in r.results),
    )

    # The upcoming invoice as it stands (portal overview).
    preview = await eventually(
        lambda: invoicing_api.PreviewInvoice(
            invoicing_pb2.PreviewInvoiceRequest(org_id=org, subscription_id=sid), timeout=TIMEOUT
        ),
        lambda r: r.invoice.subtotal.amount_minor == 1000 + 1000 + 150,
    )
    assert preview.invoice.state == inv_pb.INVOICE_STATE_DRAFT

    # The billing clock closes November: 10.00 for November (never invoiced in
    # advance), 10.00 for December in advance, 3 x 0.50 of usage.
    await subscriptions_api.ClosePeriods(
        subscriptions_pb2.ClosePeriodsRequest(now=to_timestamp(DEC)), timeout=TIMEOUT
    )
    listed = await eventually(
        lambda: invoicing_api.ListInvoices(
            invoicing_pb2.ListInvoicesRequest(org_id=org), timeout=TIMEOUT
        ),
        lambda r: len(r.invoices) == 1,
    )
    invoice = listed.invoices[0]
    assert [(li.kind, li.amount.amount_minor) for li in invoice.lines] == [
        (inv_pb.INVOICE_LINE_KIND_BASE_FEE, 1000),
        (inv_pb.INVOICE_LINE_KIND_BASE_FEE, 1000),
        (inv_pb.INVOICE_LINE_KIND_USAGE, 150),
    ]
    assert invoice.lines[2].quantity == "3"
    assert invoice.state == inv_pb.INVOICE_STATE_FINALIZED
    assert invoice.amount_due.amount_minor == 2150
    assert invoice.sequence_number == 1

    # RunBilling for the same period answers the same invoice.
    again = await invoicing_api.RunBilling(
        invoicing_pb2.RunBillingRequest(
            org_id=org, subscription_id=sid, period_start_time=to_timestamp(NOV)
        ),
        timeout=TIMEOUT,
    )
    assert not again.created and again.invoice.invoice_id == invoice.invoice_id

    # Payments captures it.
    bus = await EventBus.connect(nats_url, name="money-path-test")
    try:
        await bus.ensure_streams([producer_stream("payments")])
        await bus.publish(
            EventEnvelope.wrap(
                payments_events_pb2.PaymentSucceededEvent(
                    payment_id="pay_1",
                    org_id=org,
                    invoice_id=invoice.invoice_id,
                    subscription_id=sid,
                    amount=invoice.amount_due,
                ),
                aggregate_id=invoice.invoice_id,
            )
        )
    finally:
        await bus.close()
    paid = await eventually(
        lambda: invoicing_api.GetInvoice(
            invoicing_pb2.GetInvoiceRequest(invoice_id=invoice.invoice_id), timeout=TIMEOUT
        ),
        lambda r: r.invoice.state == inv_pb.INVOICE_STATE_PAID,
    )
    assert paid.invoice.amount_paid.amount_minor == 2150
    assert paid.invoice.amount_due.amount_minor == 0
