"""Staff read pages in chromium: the subscription inspector, an org's context, the audit log.

Read only on the seeded orgs (org_demo, org_hooli are only read here); the one
write is a metric of this module's own (``ui_audit_probe``), made through the
gateway so that the audit page has an entry whose request id the test knows.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.console import World, sign_in
from tests.support.gateway import token

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

ADMIN = "/super-admin/billing/v1"
STAFF = token(subject="ui-audit-admin", roles=["billing_admin"])


def listed(world: World, path: str, key: str, **params: str) -> list[dict[str, Any]]:
    reply = world.gateway("GET", f"{ADMIN}{path}", STAFF, params={"pageSize": "500", **params})
    assert reply.status_code == 200, reply.text
    items: list[dict[str, Any]] = reply.json().get(key, [])
    return items


def test_org_demos_subscription_found_by_org_with_its_timeline_in_order(
    world: World, page: Page
) -> None:
    (subscription,) = listed(world, "/orgs/org_demo/subscriptions", "subscriptions")
    invoices = world.invoices("org_demo")
    payments = listed(world, "/orgs/org_demo/payments", "payments")
    assert invoices and payments

    sign_in(page, world.console_url, "org_demo", "billing_admin")
    page.locator("[data-nav=admin-subscriptions]").click()
    page.fill("#org", "org_demo")
    page.get_by_role("button", name="Find by org").click()
    expect(page.locator("[data-field=subscription_id]")).to_have_text(
        subscription["subscriptionId"]
    )
    expect(page.locator("[data-stat=plan] .value")).to_contain_text("starter")
    expect(page.locator("[data-stat=state] .value")).to_have_text("active")
    # An admin's page carries the gateway's own entitlement answer.
    expect(page.locator("tr[data-feature=api_calls]")).to_contain_text(re.compile("allowed|denied"))
    expect(page.locator("table.periods tbody tr[data-period]")).to_have_count(
        len(listed(world, f"/subscriptions/{subscription['subscriptionId']}/periods", "periods"))
    )

    events = page.locator("#timeline li[data-kind]")
    kinds = events.evaluate_all("els => els.map(e => e.dataset.kind)")
    times = events.evaluate_all("els => els.map(e => e.dataset.time)")
    assert times == sorted(times, reverse=True)
    assert kinds[-1] in ("created", "started") and "created" in kinds
    finalized = page.locator("#timeline li[data-kind=invoice_finalized] a")
    final = [i for i in invoices if i.get("finalizeTime")]
    by_time = sorted(final, key=lambda i: datetime.fromisoformat(i["finalizeTime"]), reverse=True)
    expect(finalized).to_have_count(len(final))
    assert finalized.evaluate_all("els => els.map(e => e.getAttribute('href'))") == [
        f"/admin/invoices/{i['invoiceId']}" for i in by_time
    ]
    paid = page.locator("#timeline li[data-kind=payment_succeeded]")
    expect(paid).to_have_count(len(payments))
    for payment in payments:
        number = payment.get("invoiceNumber") or payment["invoiceId"]
        expect(paid.filter(has_text=number)).to_have_count(1)
    # Every payment's link opens its invoice's page.
    paid.first.locator("a").click()
    expect(page).to_have_url(re.compile(r"/admin/invoices/[^/]+$"))
    expect(page.get_by_role("heading", name=re.compile(r"Invoice ORGDEMO-\d+"))).to_be_visible()


def test_support_reads_org_hoolis_context_with_its_invoices_and_failed_payments(
    world: World, page: Page
) -> None:
    invoices = world.invoices("org_hooli")
    payments = listed(world, "/orgs/org_hooli/payments", "payments")
    failed = [p for p in payments if p.get("failureCode")]
    methods = listed(world, "/orgs/org_hooli/paymentMethods", "paymentMethods")
    assert failed, "the seed's declining card leaves failed payments"

    sign_in(page, world.console_url, "org_demo", "billing_support")
    page.goto(f"{world.console_url}/admin/orgs/org_hooli")
    expect(page.get_by_role("heading", name="org_hooli", exact=True)).to_be_visible()
    expect(page.locator("[data-stat=subscription] .value")).to_contain_text("growth")
    rows = page.locator("table.invoices tbody tr[data-invoice]")
    expect(rows).to_have_count(len(invoices))
    for invoice in invoices:
        expect(page.locator(f"tr[data-invoice='{invoice['invoiceId']}']")).to_be_visible()
    for payment in failed:
        row = page.locator(f"tr[data-payment='{payment['paymentId']}']")
        expect(row).to_contain_text(payment["failureCode"])
        expect(row).to_contain_text(payment.get("invoiceNumber") or payment["invoiceId"])
    for method in methods:
        card = method.get("card") or {}
        expect(page.locator(f"li[data-method='{method['paymentMethodId']}']")).to_contain_text(
            card.get("last4", "")
        )
    expect(page.locator(".banner")).to_have_count(0)
    # By id, from the context's list of subscriptions.
    page.locator("ul.subscriptions a").first.click()
    expect(page).to_have_url(re.compile(r"/admin/subscriptions\?id="))
    expect(page.locator("[data-stat=plan] .value")).to_contain_text("growth")
    # Support sees the limits but the check, a POST, is the admins'.
    expect(page.locator("tr[data-feature=api_calls]")).to_contain_text("billing_admin only")


def test_the_audit_log_lists_filters_and_pages_a_mutation_made_through_the_gateway(
    world: World, page: Page
) -> None:
    request_id = f"ui-audit-{uuid.uuid4().hex}"
    made = world.gateway(
        "POST",
        f"{ADMIN}/metrics",
        STAFF,
        headers={"X-Request-Id": request_id},
        json={
            "metric": {
                "code": "ui_audit_probe",
                "name": "UI audit probe",
                "aggregation": "AGGREGATION_COUNT",
            },
            "requestId": request_id,
        },
    )
    assert made.status_code == 200, made.text
    metric_id = made.json()["metric"]["metricId"]
    everything = [e["entryId"] for e in listed(world, "/audit", "entries", action="CreateMetric")]
    assert len(everything) >= 2  # the seed's metrics and ours

    sign_in(page, world.console_url, "org_demo", "billing_support")
    page.locator("[data-nav=admin-audit]").click()
    entry = page.locator("table.audit tr", has_text=request_id)
    expect(entry).to_have_count(1)
    for text in ("catalog", "ui-audit-admin", "billing_admin", "CreateMetric", metric_id, "OK"):
        expect(entry).to_contain_text(text)

    page.fill("#action", "CreateMetric")
    page.fill("#page_size", "2")
    page.get_by_role("button", name="Filter").click()
    seen: list[str] = []
    while True:
        rows = page.locator("table.audit tbody tr[data-entry]")
        assert set(rows.evaluate_all("els => els.map(e => e.dataset.action)")) == {
            "tally.catalog.v1.CatalogService.CreateMetric"
        }
        seen += rows.evaluate_all("els => els.map(e => e.dataset.entry)")
        following = page.locator("a[rel=next]")
        if following.count() == 0:
            break
        following.click()
    assert seen == everything  # each once, newest first, across pages of two

    page.fill("#action", "")
    page.fill("#page_size", "")
    page.fill("#target", metric_id)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.audit tbody tr[data-entry]")).to_have_count(1)
    page.fill("#start_time", "not a time")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("[data-field=start_time]")).to_be_visible()
    expect(page.locator("#target")).to_have_value(metric_id)


def test_a_portal_customer_gets_the_403_page_on_staff_pages(world: World, page: Page) -> None:
    sign_in(page, world.console_url, "org_demo", "customer")
    for path in ("/admin/subscriptions?org=org_demo", "/admin/orgs/org_demo", "/admin/audit"):
        response = page.goto(f"{world.console_url}{path}")
        assert response is not None and response.status == 403, path
        expect(
            page.get_by_role("heading", name="You do not have access to this page")
        ).to_be_visible()
        expect(page.locator("[data-nav=admin-audit]")).to_have_count(0)
