"""One usage event through the gateway, followed to the invoice it ends up on.

The ingestion is one trace: gateway HTTP span -> usage RecordUsage (gRPC) ->
its SQL. The period close is another: subscriptions ClosePeriods -> outbox ->
NATS -> the invoicing consumer -> usage GetAggregate (gRPC) -> the invoice and
its ``invoice.finalized`` event. The aggregate read links back to the ingestion
that last changed the aggregate, so an invoice leads to the requests behind it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc
from tally.invoicing.v1 import resources_pb2 as inv_pb
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from services.kit.devstack import free_port
from services.kit.protoconv import to_timestamp
from tests.integration.gateway.test_gateway_flows import eventually as eventually_http
from tests.integration.test_catalog_subscriptions_usage import eventually
from tests.support.gateway import gateway_client, gateway_settings, service_headers
from tests.support.metrics import has, scrape, value
from tests.support.suite import TIMEOUT, Suite, billing_suite, subscribed_org
from tests.support.tracing import capture_spans, service_of

pytestmark = pytest.mark.integration

INTERNAL = "/internal/billing/v1"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return capture_spans()  # before the services start, so every span is captured


@pytest.fixture(scope="module")
async def suite(
    spans: InMemorySpanExporter, database_url: str, nats_url: str
) -> AsyncIterator[Suite]:
    async with billing_suite(database_url, nats_url) as suite:
        yield suite


def _month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


async def _finalized_event_trace(database_url: str, invoice_id: str) -> int:
    """The trace id the ``invoice.finalized`` event of this invoice was emitted in."""
    conn = await asyncpg.connect(database_url)
    try:
        context = await conn.fetchval(
            "SELECT context FROM invoicing.outbox_event"
            " WHERE aggregate_id = $1 AND subject LIKE '%.finalized'",
            invoice_id,
        )
    finally:
        await conn.close()
    assert context, "the finalized event carries no trace context"
    traceparent: str = json.loads(context)["traceparent"]  # W3C: 00-<trace>-<span>-<flags>
    return int(traceparent.split("-")[1], 16)


def _trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


async def test_an_ingested_event_and_its_invoice_share_linked_traces(
    suite: Suite, spans: InMemorySpanExporter, database_url: str
) -> None:
    start, end = _month_bounds(datetime.now(UTC))
    org, sid = await subscribed_org(suite, start)
    nobody = f"127.0.0.1:{free_port()}"
    settings = gateway_settings(
        catalog_addr=suite.address("catalog"),
        subscriptions_addr=suite.address("subscriptions"),
        usage_addr=suite.address("usage"),
        invoicing_addr=suite.address("invoicing"),
        payments_addr=nobody,
    )
    request_id = f"trace-{uuid.uuid4().hex[:8]}"
    event = {"orgId": org, "metricCode": "api_calls", "idempotencyKey": "call-1"}
    async with gateway_client(settings) as http:
        # Usage learns the subscription from an event a moment after it is created.
        recorded = await eventually_http(
            lambda: http.post(
                f"{INTERNAL}/usage/events",
                json={"event": event},
                headers={**service_headers(), "X-Request-Id": request_id},
            ),
            lambda r: r.json()["result"]["status"] != "USAGE_EVENT_STATUS_REJECTED",
        )
    assert recorded.json()["result"]["status"] == "USAGE_EVENT_STATUS_ACCEPTED"
    assert recorded.headers["x-request-id"] == request_id

    subscriptions_api = subscriptions_pb2_grpc.SubscriptionsServiceStub(
        suite.channels["subscriptions"]
    )
    invoicing_api = invoicing_pb2_grpc.InvoicingServiceStub(suite.channels["invoicing"])
    await subscriptions_api.ClosePeriods(
        subscriptions_pb2.ClosePeriodsRequest(now=to_timestamp(end)), timeout=TIMEOUT
    )
    listed = await eventually(
        lambda: invoicing_api.ListInvoices(
            invoicing_pb2.ListInvoicesRequest(org_id=org), timeout=TIMEOUT
        ),
        lambda r: len(r.invoices) == 1 and r.invoices[0].state == inv_pb.INVOICE_STATE_FINALIZED,
    )
    invoice = listed.invoices[0]
    assert invoice.subscription_id == sid
    assert any(
        li.kind == inv_pb.INVOICE_LINE_KIND_USAGE and li.quantity == "1" for li in invoice.lines
    )

    finished = list(spans.get_finished_spans())
    requests = [
        s
        for s in finished
        if service_of(s) == "gateway" and s.parent is None and "usage/events" in s.name
    ]
    assert requests, [s.name for s in finished if service_of(s) == "gateway"]
    # The last request is the one that stored the event (earlier ones were refused).
    accepted = max(requests, key=lambda s: s.start_time or 0)
    assert accepted.context is not None
    ingestion_trace_id = accepted.context.trace_id
    ingestion_trace = _trace(finished, ingestion_trace_id)
    # The gateway's trace continues into the usage service and its SQL.
    assert {service_of(s) for s in ingestion_trace} >= {"gateway", "usage"}
    assert any(
        "db.statement" in (s.attributes or {}) or "db.query.text" in (s.attributes or {})
        for s in ingestion_trace
    )

    invoice_trace_id = await _finalized_event_trace(database_url, invoice.invoice_id)
    invoice_trace = _trace(finished, invoice_trace_id)
    # The period close crosses three services in one trace, NATS included.
    assert {service_of(s) for s in invoice_trace} >= {"subscriptions", "invoicing", "usage"}
    consumed = [
        s
        for s in invoice_trace
        if service_of(s) == "invoicing" and s.name.endswith("subscription.period_closed")
    ]
    assert consumed, "the invoicing consumer's span is not in the period close's trace"

    # The aggregate read that priced the invoice links to the ingestion.
    linked = [
        s
        for s in invoice_trace
        if any(link.context.trace_id == ingestion_trace_id for link in s.links)
    ]
    assert [service_of(s) for s in linked] and {service_of(s) for s in linked} == {"usage"}
    # Invoicing reads a consumer group's aggregates in one BatchGetAggregates.
    assert all(s.name.endswith(("GetAggregate", "BatchGetAggregates")) for s in linked)


async def test_the_period_close_shows_on_invoicing_metrics(suite: Suite) -> None:
    """Runs after the trace test in this module: its invoice was drafted and finalized."""
    samples = await scrape(suite.http_url("invoicing"))
    for state in ("draft", "finalized"):
        assert value(samples, "billing_invoice_processed_total", state=state) >= 1, state
    assert has(samples, "billing_outbox_backlog", service="invoicing")
    assert has(samples, "billing_consumer_pending", service="invoicing")
