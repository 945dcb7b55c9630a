"""Paying an open invoice from the portal, and the portal hidden from an org outside its cohort.

Orgs of this module: ``org_ui_payer`` (subscribed here, through the admin
API, with a declining card, so its first invoice stays open) and
``org_ui_outside`` (outside the portal's cohort, see
``tests/support/console.COHORT_ENV``). Both sign in with the host app's
forwarded ``Authorization: Bearer`` header, as production does, since the
dev sign-in page offers only the demo orgs.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.console import OUTSIDE_ORG, PAYER_ORG, World
from tests.support.gateway import token

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

ADMIN = token(roles=["billing_admin"])
PAYER = token(org=PAYER_ORG, permissions=["organization:billing"])


def _page_as(browser: Browser, bearer: str) -> Iterator[Page]:
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {bearer}"})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def payer_page(browser: Browser) -> Iterator[Page]:
    yield from _page_as(browser, PAYER)


@pytest.fixture
def outside_page(browser: Browser) -> Iterator[Page]:
    yield from _page_as(browser, token(org=OUTSIDE_ORG, permissions=["organization:billing"]))


def _ok(reply: Any) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _until(what: str, check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"never: {what}")


def _package(world: World, code: str) -> str:
    packages = _ok(world.gateway("GET", "/super-admin/billing/v1/packages", ADMIN))["packages"]
    return str(next(p["packageId"] for p in packages if p["code"] == code))


def _open_invoice(world: World) -> dict[str, Any]:
    """org_ui_payer on Starter, upgraded at once to Growth: the difference is
    invoiced now, and its declining card leaves that invoice open."""
    _ok(
        world.gateway(
            "POST",
            "/portal/billing/v1/paymentMethods:attach",
            PAYER,
            json={"providerPaymentMethodId": "pm_card_chargeDeclined", "setDefault": True},
        )
    )
    created = _ok(
        world.gateway(
            "POST",
            f"/super-admin/billing/v1/orgs/{PAYER_ORG}/subscriptions",
            ADMIN,
            json={
                "packageId": _package(world, "starter"),
                "requestId": f"ui-payer-{uuid.uuid4()}",
            },
        )
    )["subscription"]
    _ok(
        world.gateway(
            "POST",
            f"/super-admin/billing/v1/subscriptions/{created['subscriptionId']}:changePlan",
            ADMIN,
            json={
                "packageId": _package(world, "growth"),
                "timing": "PLAN_CHANGE_TIMING_IMMEDIATE",
                "requestId": f"ui-payer-change-{uuid.uuid4()}",
            },
        )
    )

    def declined() -> dict[str, Any] | None:
        payments = _ok(world.gateway("GET", "/portal/billing/v1/payments", PAYER))
        failed = [p for p in payments.get("payments", []) if p.get("failureCode")]
        invoices = world.invoices(PAYER_ORG, "INVOICE_STATE_FINALIZED")
        return invoices[0] if failed and invoices else None

    invoice: dict[str, Any] = _until("the upgrade's invoice declined", declined)
    return invoice


def test_a_customer_adds_a_card_and_pays_an_open_invoice_once(
    world: World, payer_page: Page
) -> None:
    invoice = _open_invoice(world)
    page = payer_page
    page.goto(f"{world.console_url}/portal/billing-profile")
    page.locator("[data-action=add-card]").click()
    page.select_option("#provider_payment_method_id", "pm_card_visa")
    page.get_by_role("button", name="Add this card").click()
    expect(page.get_by_role("status")).to_have_text("Card added.")
    page.locator("tr[data-last4='4242'] [data-action=default]").click()
    expect(page.get_by_role("status")).to_have_text("Default payment method changed.")

    page.goto(f"{world.console_url}/portal/invoices/{invoice['invoiceId']}")
    pay = page.get_by_role("button", name=re.compile(r"^Pay \$[\d,.]+ now$"))
    expect(pay).to_be_visible()
    pay.dblclick()  # a double click pays once: the form's request id is replayed
    page.wait_for_load_state()

    def paid() -> bool:
        return bool(world.invoices(PAYER_ORG, "INVOICE_STATE_PAID"))

    _until("the invoice paid (the emulator's webhook)", paid)
    page.reload()
    expect(page.locator("[data-state=paid]").first).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Pay "))).to_have_count(0)
    payments = _ok(world.gateway("GET", "/portal/billing/v1/payments", PAYER))["payments"]
    succeeded = [p for p in payments if p.get("state") == "PAYMENT_STATE_SUCCEEDED"]
    assert [p["invoiceId"] for p in succeeded] == [invoice["invoiceId"]]


def test_an_org_outside_the_portal_cohort_sees_no_billing(world: World, outside_page: Page) -> None:
    page = outside_page
    page.goto(f"{world.console_url}/portal")
    expect(
        page.get_by_role("heading", name="Billing is not enabled for your organisation")
    ).to_be_visible()
    for item in ("overview", "invoices", "usage", "billing-profile"):
        expect(page.locator(f"nav [data-nav={item}]")).to_have_count(0)
    page.goto(f"{world.console_url}/portal/invoices")
    expect(
        page.get_by_role("heading", name="Billing is not enabled for your organisation")
    ).to_be_visible()
