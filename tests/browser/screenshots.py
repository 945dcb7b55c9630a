"""``make screenshots``: PNGs of the console's main pages under docs/console/.

Starts the seeded suite as the browser tests do, signs in as each role on the
dev sign-in page and saves what chromium shows. Run it again after a page changes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page

from tests.support.console import World, chromium, seeded_suite, sign_in

OUT = Path(__file__).resolve().parents[2] / "docs" / "console"


def _shoot(page: Page, name: str) -> None:
    path = OUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"  {path.relative_to(OUT.parents[1])}", flush=True)


def take(world: World, page: Page) -> None:
    url = world.console_url
    page.goto(f"{url}/sign-in")
    _shoot(page, "sign-in")
    sign_in(page, url, "org_demo", "customer")
    _shoot(page, "portal-overview")
    page.goto(f"{url}/portal/invoices")
    _shoot(page, "portal-invoices")
    (invoice, *_) = world.invoices("org_demo")
    page.goto(f"{url}/portal/invoices/{invoice['invoiceId']}")
    _shoot(page, "portal-invoice")
    page.goto(f"{url}/portal/plan")
    _shoot(page, "portal-plan")
    # The quote only: nothing changes until its confirm form is posted.
    page.locator("[data-choose=growth] button").click()
    page.wait_for_load_state()
    _shoot(page, "portal-plan-quote")
    page.goto(f"{url}/portal/usage?range=week")
    _shoot(page, "portal-usage")
    page.goto(f"{url}/portal/billing-profile")
    _shoot(page, "portal-billing-profile")
    page.context.clear_cookies()
    sign_in(page, url, "org_demo", "billing_admin")
    _shoot(page, "admin-invoices")
    (open_invoice, *_) = world.invoices("org_hooli", "INVOICE_STATE_FINALIZED")
    page.goto(f"{url}/admin/invoices/{open_invoice['invoiceId']}")
    _shoot(page, "admin-invoice")
    page.goto(f"{url}/admin/invoices/{open_invoice['invoiceId']}/void")
    _shoot(page, "admin-void-confirm")
    page.goto(f"{url}/admin/invoices/{open_invoice['invoiceId']}/retry-payment")
    _shoot(page, "admin-retry-payment-confirm")
    *_, oldest = world.invoices("org_initech")  # newest first: finalized or paid by now
    page.goto(f"{url}/admin/invoices/{oldest['invoiceId']}/credit-memo")
    _shoot(page, "admin-credit-memo-lines")
    page.goto(f"{url}/admin/usage?org=org_demo&metric_code=storage_gb")
    _shoot(page, "admin-usage")
    page.goto(f"{url}/admin/subscriptions?org=org_demo")
    _shoot(page, "admin-subscription")
    page.goto(f"{url}/admin/orgs/org_hooli")
    _shoot(page, "admin-org-context")
    page.goto(f"{url}/admin/audit")
    _shoot(page, "admin-audit")
    page.goto(f"{url}/admin/catalog")
    _shoot(page, "admin-catalog")
    page.locator("tr[data-package=growth] a").click()
    page.locator('[name="preview.quantity"]').fill("250000")
    page.get_by_role("button", name="Rate", exact=True).click()
    _shoot(page, "admin-catalog-package")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"writing screenshots to {OUT} ...", flush=True)
    with (
        tempfile.TemporaryDirectory() as root,
        seeded_suite(Path(root)) as world,
        chromium() as browser,
    ):
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        take(world, context.new_page())
        context.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
