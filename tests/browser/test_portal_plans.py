"""The portal's plan pages in a real chromium against the seeded suite.

Orgs changed here: org_globex (enterprise; a plan change now, then one at
period end withdrawn again) and org_initech (its seeded cancellation at
period end withdrawn, then made again through the form, as the seed left it).
org_umbrella (in trial) is only read.

The quote must equal the change to the cent, and fees are prorated to the
second, so the first test stands the services' clock still first: a billing
clock run a few minutes ahead (no period ends then) makes every command and
quote until the wall clock catches up carry that one instant
(docs/services/subscriptions.md, "max(wall clock, billing clock)").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Page, expect

from console.money import format_money
from tests.support.console import World, sign_in
from tests.support.gateway import token

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

T = TypeVar("T")
ADMIN = token(roles=["billing_admin"])
GLOBEX = token(org="org_globex", permissions=["organization:billing"])
INITECH = token(org="org_initech", permissions=["organization:billing"])
CONFIRM_FIELDS = (
    "csrf_token",
    "request_id",
    "subscription_id",
    "package_id",
    "package_version_id",
    "timing",
)


def eventually(check: Callable[[], T | None], seconds: float = 30) -> T:
    """What another service applies from an event, once it has."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not there after {seconds} s"
        time.sleep(0.25)


def subscription(world: World, auth: str) -> dict[str, Any]:
    listed = world.gateway("GET", "/portal/billing/v1/subscriptions", auth)
    assert listed.status_code == 200, listed.text
    (current,) = [
        s for s in listed.json()["subscriptions"] if s["state"] != "SUBSCRIPTION_STATE_CANCELED"
    ]
    return dict(current)


def plan_change_invoices(world: World) -> list[dict[str, Any]]:
    return [
        i for i in world.invoices("org_globex") if i.get("reason") == "INVOICE_REASON_PLAN_CHANGE"
    ]


def hold_the_clock(world: World) -> None:
    """The services' time stands at one instant a few minutes ahead (see the docstring)."""
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=3)
    if (ahead + timedelta(minutes=2)).month != datetime.now(UTC).month:
        # The seeded periods are calendar months: this close would end them.
        pytest.skip("within minutes of a month's end, holding the clock would close periods")
    ran = world.gateway(
        "POST",
        "/super-admin/billing/v1/subscriptions:closePeriods",
        ADMIN,
        json={"now": ahead.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    assert ran.status_code == 200, ran.text
    assert not ran.json().get("closedPeriods"), "no period may end in the next minutes"


def test_a_customer_reads_the_quote_confirms_and_the_plan_changes_once(
    world: World, page: Page
) -> None:
    hold_the_clock(world)
    assert plan_change_invoices(world) == []
    sign_in(page, world.console_url, "org_globex", "customer")
    page.get_by_role("link", name="Plan", exact=True).click()
    expect(page.locator("[data-package=enterprise][data-current]")).to_have_count(1)
    expect(page.locator("#subscription [data-field=plan]")).to_have_text("Enterprise (v1)")
    starter = page.locator("[data-package=starter]")
    expect(starter.locator("[data-field=base_fee]")).to_have_text("$49.00 a month")
    starter.get_by_label("now (prorated)").check()
    starter.get_by_role("button", name=re.compile("Change to Starter")).click()

    # The quote: nothing has changed yet.
    expect(page.get_by_role("heading", name="Change to Starter (v1)")).to_be_visible()
    expect(page.locator("[data-direction]")).to_have_text("downgrade")
    due = page.locator("[data-quote=due-now]")
    shown = {key: due.locator(f"[data-{key}]").inner_text() for key in ("subtotal", "tax", "total")}
    shown_lines = [
        [cell.strip() for cell in row.split("\t")]
        for row in due.locator("tbody tr").all_inner_texts()
    ]
    expect(page.locator("[data-quote=next] tbody tr")).not_to_have_count(0)
    form: dict[str, str | float | bool] = {
        name: page.locator(f"form.once input[name='{name}']").input_value()
        for name in CONFIRM_FIELDS
    }
    assert subscription(world, GLOBEX)["packageCode"] == "enterprise"

    page.get_by_role("button", name="Confirm plan change").click()
    expect(page).to_have_url(re.compile(r"/portal/plan\?done=changed$"))
    expect(page.get_by_role("status")).to_have_text("Your plan has changed.")
    expect(page.locator("[data-package=starter][data-current]")).to_have_count(1)
    expect(page.locator("#subscription [data-field=plan]")).to_have_text("Starter (v1)")

    # The same form once more (a double click past the script, a reloaded
    # POST): the gateway replays the first change. A second change would be
    # refused PLAN_UNCHANGED and show the plan page again with a 400.
    again = page.request.post(f"{world.console_url}/portal/plan/change", form=form, max_redirects=0)
    assert again.status == 303 and again.headers["location"].endswith("?done=changed")

    (made,) = eventually(lambda: plan_change_invoices(world))
    got = world.gateway("GET", f"/super-admin/billing/v1/invoices/{made['invoiceId']}", ADMIN)
    assert got.status_code == 200, got.text
    invoice = got.json()["invoice"]
    assert {key: format_money(invoice.get(key)) for key in shown} == shown
    assert [
        [line["description"], line["quantity"], format_money(line["amount"])]
        for line in invoice["lines"]
    ] == shown_lines
    assert subscription(world, GLOBEX)["packageCode"] == "starter"


def test_a_change_at_period_end_is_shown_pending_and_can_be_withdrawn(
    world: World, page: Page
) -> None:
    sign_in(page, world.console_url, "org_globex", "customer")
    page.goto(f"{world.console_url}/portal/plan")
    growth = page.locator("[data-package=growth]")
    growth.get_by_label("at the end of this period").check()
    growth.get_by_role("button", name=re.compile("Change to Growth")).click()
    expect(page.locator("[data-field=effective]")).to_contain_text("at the end of this period")
    expect(page.locator("[data-quote=due-now-none]")).to_have_text("Nothing is invoiced now.")
    expect(page.locator("[data-quote=next] [data-total]")).to_have_text(
        re.compile(r"^\$[\d,]+\.\d\d$")
    )
    page.get_by_role("button", name="Confirm plan change").click()

    expect(page).to_have_url(re.compile(r"done=scheduled$"))
    pending = page.locator("#subscription [data-action='change plan']")
    expect(pending).to_contain_text("Changes to Growth (v1) at period end")
    expect(page.locator("[data-package=growth][data-current]")).to_have_count(0)
    (entry,) = subscription(world, GLOBEX)["pendingSchedules"]
    assert entry["action"] == "SCHEDULE_ACTION_CHANGE_PLAN"

    pending.get_by_role("button", name="Keep my current plan").click()
    expect(page).to_have_url(re.compile(r"done=withdrawn$"))
    expect(page.locator("#subscription .pending")).to_have_count(0)
    assert subscription(world, GLOBEX).get("pendingSchedules", []) == []


def test_a_refused_quote_is_shown_next_to_the_choice(world: World, page: Page) -> None:
    current = subscription(world, GLOBEX)
    sign_in(page, world.console_url, "org_globex", "customer")
    response = page.goto(
        f"{world.console_url}/portal/plan/change?package_id={current['packageId']}&timing=now"
    )
    assert response is not None and response.status == 400
    refused = page.locator(f"[data-refused='{current['packageId']}']")
    expect(refused).to_have_text("You are already on this plan.")
    expect(page.locator(f"[data-package={current['packageCode']}][data-current]")).to_contain_text(
        "You are already on this plan."
    )


def test_a_pending_cancellation_is_shown_withdrawn_and_made_again(world: World, page: Page) -> None:
    assert subscription(world, INITECH)["cancelAtPeriodEnd"] is True
    sign_in(page, world.console_url, "org_initech", "customer")
    page.goto(f"{world.console_url}/portal/plan")
    pending = page.locator("#subscription [data-action=cancel]")
    expect(pending).to_contain_text("Cancels at period end")
    expect(page.locator("[data-action=cancel][href]")).to_have_count(0)

    pending.get_by_role("button", name="Keep my subscription").click()
    expect(page).to_have_url(re.compile(r"done=withdrawn$"))
    expect(page.locator("#subscription .pending")).to_have_count(0)
    assert not subscription(world, INITECH).get("cancelAtPeriodEnd")

    page.locator("a[data-action=cancel]").click()
    expect(
        page.get_by_role("heading", name=re.compile("Cancel your starter subscription"))
    ).to_be_visible()
    assert not subscription(world, INITECH).get("cancelAtPeriodEnd")
    page.get_by_label(re.compile("at the end of this period")).check()
    page.fill("#reason", "moving to another vendor (browser test)")
    page.get_by_role("button", name="Cancel subscription").click()
    expect(page).to_have_url(re.compile(r"done=cancel_scheduled$"))
    expect(page.locator("#subscription [data-action=cancel]")).to_contain_text(
        "Cancels at period end"
    )
    assert subscription(world, INITECH)["cancelAtPeriodEnd"] is True


def test_a_trial_is_shown_with_its_end(world: World, page: Page) -> None:
    sign_in(page, world.console_url, "org_umbrella", "customer")
    page.goto(f"{world.console_url}/portal/plan")
    expect(page.locator("#subscription [data-field=status]")).to_have_text("trialing")
    expect(page.locator("#subscription [data-field=trial]")).to_contain_text("In trial until")


def test_a_customer_without_the_billing_permission_gets_the_403_page(
    world: World, page: Page
) -> None:
    reader = token(org="org_globex", permissions=["organization:read"])
    page.set_extra_http_headers({"Authorization": f"Bearer {reader}"})
    response = page.goto(f"{world.console_url}/portal/plan")
    assert response is not None and response.status == 403
    expect(page.locator("main")).to_contain_text("organization:billing")
    expect(page.locator("[data-package]")).to_have_count(0)
