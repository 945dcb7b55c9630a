"""The billing console in a real chromium against the suite as ``make run`` starts it.

One seeded suite for the module (PostgreSQL, NATS, the five services, the
gateway, the Stripe emulator and the console, each its own process); each
test signs in on the dev sign-in page as a person would.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.support.console import World, sign_in
from tests.support.gateway import token

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

XSS_NAME = '<script>window.__pwned = 1; alert("pwned")</script> Demo & Co'


def test_a_customer_signs_in_sees_the_overview_and_downloads_an_invoice(
    world: World, page: Page
) -> None:
    sign_in(page, world.console_url, "org_demo", "customer")
    expect(page).to_have_url(re.compile(r"/portal$"))
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()
    for stat in ("plan", "period", "amount", "next-invoice", "balance", "payment"):
        expect(page.locator(f"[data-stat={stat}] .value")).not_to_be_empty()
    expect(page.locator("[data-stat=plan] .value")).to_contain_text("starter")
    expect(page.locator("[data-stat=payment] [data-state]")).to_have_text("paid")
    # A server-drawn chart per metric of the period, with the plan's limit line.
    chart = page.locator("figure.chart[data-metric=api_calls]")
    expect(chart.locator("svg polyline.series")).to_have_count(1)
    expect(chart.locator("svg line.limit")).to_have_count(1)

    page.get_by_role("link", name="Invoices").click()
    rows = page.locator("table.invoices tbody tr[data-invoice]")
    expect(rows).to_have_count(3)
    expect(rows.first.locator("[data-state]")).to_have_text("paid")
    rows.first.locator("a").click()
    expect(page.get_by_role("heading", name=re.compile(r"Invoice ORGDEMO-\d+"))).to_be_visible()
    expect(page.locator("[data-total]")).to_have_text(re.compile(r"^\$\d[\d,]*\.\d\d$"))
    expect(page.get_by_role("button", name=re.compile("Pay"))).to_have_count(0)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download HTML").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".html")
    path = download.path()
    assert path is not None
    body = path.read_text(encoding="utf-8")
    assert "ORGDEMO-" in body and "<html" in body.lower()


def test_a_customer_cannot_open_another_orgs_invoice_by_url(world: World, page: Page) -> None:
    (other, *_) = world.invoices("org_acme")
    sign_in(page, world.console_url, "org_demo", "customer")
    response = page.goto(f"{world.console_url}/portal/invoices/{other['invoiceId']}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(other["number"])


def test_text_from_the_api_is_shown_as_text_never_run(world: World, page: Page) -> None:
    portal = token(org="org_demo", permissions=["organization:billing"])
    changed = world.gateway(
        "PATCH",
        "/portal/billing/v1/billingProfile",
        portal,
        json={"billingProfile": {"legalName": XSS_NAME}, "updateMask": "legalName"},
    )
    assert changed.status_code == 200, changed.text
    dialogs: list[str] = []

    def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    sign_in(page, world.console_url, "org_demo", "customer")
    name = page.locator(".billed-to [data-field=legal_name]")
    # innerText would leave out a real <script> element's body: the text is all there.
    expect(name).to_have_text(XSS_NAME)
    assert page.locator("script:not([src])").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []


def test_an_admin_voids_an_invoice_after_confirming(world: World, page: Page) -> None:
    invoice = world.invoices("org_hooli", "INVOICE_STATE_FINALIZED")[-1]
    sign_in(page, world.console_url, "org_demo", "billing_admin")
    page.goto(f"{world.console_url}/admin/invoices/{invoice['invoiceId']}")
    expect(page.locator("h1 [data-state]")).to_have_text("finalized")
    page.locator("[data-action=void]").click()
    # The confirmation step: nothing has changed yet.
    expect(page.get_by_role("heading", name=re.compile("Void invoice"))).to_be_visible()
    assert world.invoices("org_hooli", "INVOICE_STATE_VOID") == []
    page.fill("#reason", "billed in error (browser test)")
    page.get_by_role("button", name="Void this invoice").click()
    expect(page.locator("h1 [data-state]")).to_have_text("void")
    expect(page.get_by_role("status")).to_contain_text("void")
    assert [i["invoiceId"] for i in world.invoices("org_hooli", "INVOICE_STATE_VOID")] == [
        invoice["invoiceId"]
    ]


def test_support_sees_no_void_button_and_a_forged_post_is_refused(world: World, page: Page) -> None:
    invoice = world.invoices("org_acme", "INVOICE_STATE_FINALIZED")[0]
    sign_in(page, world.console_url, "org_demo", "billing_support")
    page.goto(f"{world.console_url}/admin/invoices/{invoice['invoiceId']}")
    expect(page.locator("h1 [data-state]")).to_have_text("finalized")
    expect(page.locator("[data-action]")).to_have_count(0)
    # The confirmation page by URL, then its POST: the gateway refuses it.
    page.goto(f"{world.console_url}/admin/invoices/{invoice['invoiceId']}/void")
    page.fill("#reason", "support should not be able to do this")
    page.get_by_role("button", name="Void this invoice").click()
    expect(page.locator("#refused")).to_contain_text("Not allowed")
    expect(page.locator("#refused")).to_contain_text("403")
    assert (
        world.invoices("org_acme", "INVOICE_STATE_FINALIZED")[0]["invoiceId"]
        == (invoice["invoiceId"])
    )


def test_the_gateway_stopped_gives_the_unavailable_banner(world: World, page: Page) -> None:
    sign_in(page, world.console_url, "org_demo", "customer")
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()
    world.suite.stop_process("gateway")
    try:
        response = page.goto(f"{world.console_url}/portal/invoices")
        assert response is not None and response.status == 503
        expect(page.locator("#unavailable")).to_have_text(
            "Billing is unavailable right now; try again in a minute."
        )
        expect(page.locator("body")).not_to_contain_text("Traceback")
    finally:
        world.suite.start_process("gateway")
        world.suite.wait_healthy(60)
