"""Invoice PDFs through the real invoicing service (PostgreSQL, NATS) and
through the real gateway's HTTP routes, read back with pypdf.

Invoices wait as drafts here (a long grace period), so one module sees both
a draft and, after FinalizeInvoice, a finalized invoice with its number.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pypdf
import pytest
from tally.invoicing.v1 import invoicing_pb2 as api
from tally.invoicing.v1 import resources_pb2 as pb
from tally.type.v1 import money_pb2

from tests.support.gateway import (
    admin_headers,
    gateway_client,
    gateway_settings,
    portal_headers,
)
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
)
from tests.support.subscriptions import details

pytestmark = pytest.mark.integration

PLAN = version("documented", base_fee="49.5", in_advance=False)
HOSTILE = '<script>alert("x")</script> <b>Extra</b> & <font size="30">seats</font>'
LEGAL_NAME = "<i>Müller</i> & Söhne GmbH"
PORTAL = "/portal/billing/v1"
ADMIN = "/super-admin/billing/v1"


@dataclass
class World:
    h: Harness
    http: httpx.AsyncClient


@pytest.fixture(scope="module")
async def world(database_url: str, nats_url: str) -> AsyncIterator[World]:
    async with running_invoicing(
        database_url, nats_url, INVOICING_GRACE_PERIOD_SECONDS="86400"
    ) as h:
        await h.publish_version(PLAN)
        settings = gateway_settings(
            invoicing_addr=f"127.0.0.1:{h.runtime.port}",
            grpc_deadline_seconds=5.0,
        )
        async with gateway_client(settings) as http:
            yield World(h, http)


def pdf_text(data: bytes) -> str:
    """The PDF's text with every run of white space as one space (lines wrap)."""
    reader = pypdf.PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


async def draft_with_adjustment(h: Harness, org: str) -> pb.Invoice:
    """A period's draft (base fee 49.50) plus a staff line of customer-ish text (12.34)."""
    sub = new_id("sub")
    closed = period_closed(org, sub, NOV, DEC, [(PLAN, ACTIVE, NOV, DEC)], next_end=JAN)
    await h.publish(closed, sub)
    (draft,) = await h.wait_invoices(sub, 1)
    reply = await h.stub.CreateInvoiceAdjustment(
        api.CreateInvoiceAdjustmentRequest(
            invoice_id=draft.invoice_id,
            description=HOSTILE,
            amount=money_pb2.Money(currency_code="USD", amount_minor=1234),
            request_id=new_id("adj"),
        ),
        timeout=5,
    )
    return reply.invoice


async def finalized_invoice(h: Harness, org: str) -> pb.Invoice:
    await h.stub.UpdateBillingProfile(
        api.UpdateBillingProfileRequest(
            org_id=org, billing_profile=pb.BillingProfile(legal_name=LEGAL_NAME)
        ),
        timeout=5,
    )
    draft = await draft_with_adjustment(h, org)
    reply = await h.stub.FinalizeInvoice(
        api.FinalizeInvoiceRequest(invoice_id=draft.invoice_id, request_id=new_id("fin")),
        timeout=5,
    )
    assert reply.invoice.number
    return reply.invoice


def assert_shows(text: str, inv: pb.Invoice) -> None:
    """The number (or draft title), every line with its amount, and the total."""
    assert (f"Invoice {inv.number}" if inv.number else "Draft invoice") in text
    assert len(inv.lines) == 2
    for line in inv.lines:
        assert line.description in text
        assert f"{line.amount.amount_minor / 100:.2f} USD" in text
    assert inv.total.amount_minor == 4950 + 1234
    assert re.search(r"Total\s*61\.84 USD", text), text


async def test_the_service_renders_the_pdf(world: World) -> None:
    h = world.h
    org = new_id("org")
    inv = await finalized_invoice(h, org)
    call = h.stub.RenderInvoicePdf(
        api.RenderInvoicePdfRequest(invoice_id=inv.invoice_id, org_id=org), timeout=5
    )
    reply = await call
    assert reply.document.content_type == "application/pdf"
    text = pdf_text(reply.document.data)
    assert_shows(text, inv)
    # Customer text is printed as written, never read as markup.
    assert HOSTILE in text and LEGAL_NAME in text
    assert ("content-disposition", f'inline; filename="{inv.number}.pdf"') in tuple(
        await call.initial_metadata()
    )
    # RenderInvoice with format PDF is the same document, byte for byte.
    rendered = await h.stub.RenderInvoice(
        api.RenderInvoiceRequest(invoice_id=inv.invoice_id, format=api.DOCUMENT_FORMAT_PDF),
        timeout=5,
    )
    assert rendered.document == reply.document
    html = await h.stub.RenderInvoice(
        api.RenderInvoiceRequest(invoice_id=inv.invoice_id), timeout=5
    )
    assert html.document.content_type.startswith("text/html")
    assert b"61.84 USD" in html.document.data


async def test_a_draft_pdf_is_marked_draft(world: World) -> None:
    h = world.h
    draft = await draft_with_adjustment(h, new_id("org"))
    assert draft.state == pb.INVOICE_STATE_DRAFT and not draft.number
    call = h.stub.RenderInvoicePdf(
        api.RenderInvoicePdfRequest(invoice_id=draft.invoice_id), timeout=5
    )
    text = pdf_text((await call).document.data)
    assert_shows(text, draft)
    assert "Status: draft" in text
    filename = f'inline; filename="draft-{draft.invoice_id}.pdf"'
    assert ("content-disposition", filename) in tuple(await call.initial_metadata())


async def test_unknown_other_orgs_and_bad_requests(world: World) -> None:
    h = world.h
    org = new_id("org")
    inv = await finalized_invoice(h, org)
    for request in (
        api.RenderInvoicePdfRequest(invoice_id=inv.invoice_id, org_id=new_id("org")),
        api.RenderInvoicePdfRequest(invoice_id="inv_nope"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.RenderInvoicePdf(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(err.value)[0] == "INVOICE_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.RenderInvoicePdf(api.RenderInvoicePdfRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invoice_id" in details(err.value)[2]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.RenderInvoice(
            api.RenderInvoiceRequest(invoice_id=inv.invoice_id, format=7),  # type: ignore[arg-type]
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "format" in details(err.value)[2]


async def test_the_gateway_serves_the_pdf_on_both_route_groups(world: World) -> None:
    org = new_id("org")
    inv = await finalized_invoice(world.h, org)
    portal = await world.http.get(
        f"{PORTAL}/invoices/{inv.invoice_id}:pdf", headers=portal_headers(org)
    )
    assert portal.status_code == 200, portal.text
    assert portal.headers["content-type"] == "application/pdf"
    assert portal.headers["content-disposition"] == f'inline; filename="{inv.number}.pdf"'
    assert_shows(pdf_text(portal.content), inv)

    admin = await world.http.get(f"{ADMIN}/invoices/{inv.invoice_id}:pdf", headers=admin_headers())
    assert admin.status_code == 200 and admin.content == portal.content
    rendered = await world.http.get(
        f"{PORTAL}/invoices/{inv.invoice_id}:render",
        params={"format": "DOCUMENT_FORMAT_PDF"},
        headers=portal_headers(org),
    )
    assert rendered.status_code == 200
    assert rendered.headers["content-type"] == "application/pdf"
    assert rendered.content == portal.content
    html = await world.http.get(
        f"{PORTAL}/invoices/{inv.invoice_id}:render", headers=portal_headers(org)
    )
    assert html.headers["content-type"].startswith("text/html")
    assert html.headers["content-disposition"] == f'inline; filename="{inv.number}.html"'
    # JSON answers carry no document headers.
    got = await world.http.get(f"{PORTAL}/invoices/{inv.invoice_id}", headers=portal_headers(org))
    assert got.status_code == 200 and "content-disposition" not in got.headers


async def test_another_orgs_invoice_is_not_found_on_the_portal(world: World) -> None:
    org = new_id("org")
    inv = await finalized_invoice(world.h, org)
    other = portal_headers(new_id("org"))
    for path in (f"{PORTAL}/invoices/{inv.invoice_id}:pdf", f"{PORTAL}/invoices/inv_nope:pdf"):
        r = await world.http.get(path, headers=other)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["reason"] in ("INVOICE_NOT_FOUND", "NOT_FOUND")
        assert inv.number not in r.text and "content-disposition" not in r.headers
    # Naming the owner explicitly does not help either.
    r = await world.http.get(
        f"{PORTAL}/invoices/{inv.invoice_id}:pdf", params={"orgId": org}, headers=other
    )
    assert r.status_code == 404
