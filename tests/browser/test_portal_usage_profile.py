"""The portal's usage analytics and billing profile in a real chromium.

Orgs: org_demo is only read (its seeded usage); org_umbrella (in trial, no
payment method when seeded) gets cards and a billing email from these tests.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import Page, expect

from console.portal_usage import CSV_HEADER
from tests.support.console import World, sign_in
from tests.support.gateway import token

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

UMBRELLA = token(org="org_umbrella", permissions=["organization:billing"])


def _rows(page: Page, metric: str) -> list[tuple[str, str]]:
    """(bucket start, value) of the metric's table, as shown."""
    rows = page.locator(f"section[data-metric={metric}] table.usage tbody tr[data-bucket]")
    return [
        (str(row.get_attribute("data-bucket")), row.locator("[data-value]").inner_text())
        for row in rows.all()
    ]


def test_usage_shows_a_chart_and_a_table_per_metric_by_range_and_as_csv(
    world: World, page: Page
) -> None:
    sign_in(page, world.console_url, "org_demo", "customer")
    page.locator("nav [data-nav=usage]").click()
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    for metric in ("api_calls", "storage_gb"):
        section = page.locator(f"section[data-metric={metric}]")
        expect(section.locator("figure.chart svg")).to_have_count(1)
        # The chart draws the table's buckets: one dot per row.
        dots = section.locator("svg circle.dot").count()
        assert dots > 0 and dots == len(_rows(page, metric))

    page.locator("[data-range=day]").click()
    expect(page.locator("[data-range=day]")).to_have_attribute("aria-current", "page")
    hourly = _rows(page, "api_calls")
    assert len(hourly) == 24
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", start) for start, _ in hourly)
    # Seeded calls run all day long, so yesterday's hours in the window have some.
    assert any(value != "0" for _, value in hourly)

    page.locator("[data-range=week]").click()
    expect(page.locator("[data-range=week]")).to_have_attribute("aria-current", "page")
    daily = _rows(page, "api_calls")
    assert len(daily) == 7
    assert all(start.endswith("T00:00:00Z") for start, _ in daily)
    expect(page.locator("section[data-metric=api_calls] svg circle.dot")).to_have_count(7)

    with page.expect_download() as download_info:
        page.locator("[data-csv=api_calls]").click()
    download = download_info.value
    assert re.fullmatch(r"usage-org_demo-api_calls-week-\d{8}\.csv", download.suggested_filename)
    path = download.path()
    assert path is not None
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_HEADER
    assert [(start, value) for _, start, _, value, _ in rows[1:]] == daily


def _methods(page: Page) -> list[tuple[str, bool]]:
    rows = page.locator("table.methods tbody tr[data-method]")
    return [
        (str(row.get_attribute("data-last4")), row.locator("[data-default]").count() == 1)
        for row in rows.all()
    ]


def _add_card(page: Page, card: str) -> None:
    page.locator("[data-action=add-card]").click()
    expect(page.get_by_role("heading", name="Add a card")).to_be_visible()
    page.select_option("#provider_payment_method_id", card)
    page.get_by_role("button", name="Add this card").click()
    expect(page.get_by_role("status")).to_have_text("Card added.")


def test_a_customer_adds_cards_changes_the_default_and_removes_one(
    world: World, page: Page
) -> None:
    sign_in(page, world.console_url, "org_umbrella", "customer")
    page.locator("nav [data-nav=billing-profile]").click()
    expect(page.locator("table.methods")).to_contain_text("No payment method yet")

    _add_card(page, "pm_card_visa")
    assert _methods(page) == [("4242", True)]  # the first card is the default
    _add_card(page, "pm_card_mastercard")
    assert sorted(_methods(page)) == [("4242", True), ("4444", False)]

    page.locator("tr[data-last4='4444'] [data-action=default]").click()
    expect(page.get_by_role("status")).to_have_text("Default payment method changed.")
    assert sorted(_methods(page)) == [("4242", False), ("4444", True)]

    page.locator("tr[data-last4='4242'] [data-action=remove]").click()
    # The confirmation step: nothing is removed yet.
    expect(page.get_by_role("heading", name="Remove this payment method?")).to_be_visible()
    assert (
        len(
            world.gateway("GET", "/portal/billing/v1/paymentMethods", UMBRELLA).json()[
                "paymentMethods"
            ]
        )
        == 2
    )
    page.get_by_role("button", name="Remove this card").click()
    expect(page.get_by_role("status")).to_have_text("Payment method removed.")
    assert _methods(page) == [("4444", True)]
    listed = world.gateway("GET", "/portal/billing/v1/paymentMethods", UMBRELLA).json()
    assert [(m["card"]["last4"], m.get("isDefault", False)) for m in listed["paymentMethods"]] == [
        ("4444", True)
    ]


def test_a_malformed_billing_email_gets_the_gateways_violation_then_a_good_one_is_saved(
    world: World, page: Page
) -> None:
    sign_in(page, world.console_url, "org_umbrella", "customer")
    page.goto(f"{world.console_url}/portal/billing-profile")
    email = page.locator("#billing_profile\\.invoice_email")
    email.fill("not-an-email")
    page.get_by_role("button", name="Save billing profile").click()
    error = page.locator(".field-error[data-field='billing_profile.invoice_email']")
    expect(error).to_have_text("is not an email address")
    expect(email).to_have_value("not-an-email")  # the form comes back as typed

    email.fill("billing@umbrella.example")
    page.get_by_role("button", name="Save billing profile").click()
    expect(page.get_by_role("status")).to_have_text("Billing profile saved.")
    expect(email).to_have_value("billing@umbrella.example")
    saved = world.gateway("GET", "/portal/billing/v1/billingProfile", UMBRELLA).json()
    assert saved["billingProfile"]["invoiceEmail"] == "billing@umbrella.example"
