"""Admin invoice operations (finalize, retry payment, credit memo by lines) and the usage explorer.

Orgs this module changes: org_initech (upgraded to growth at once, which
bills the fee difference on a draft it then finalizes; credits lines of its
oldest invoice) and org_hooli's payments (retries its newest finalized
invoice with its declining card: it fails again, the invoice stays
finalized; test_console.py voids the oldest). org_demo's usage is only read
(the backfill is a dry run).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from services.cli.seed import month_start
from tests.support.console import World, sign_in
from tests.support.gateway import token

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

ADMIN = "/super-admin/billing/v1"
STAFF = token(roles=["billing_admin"])


def _by_period(world: World, org: str, state: str | None = None) -> list[dict[str, Any]]:
    invoices = sorted(world.invoices(org, state), key=lambda i: str(i["periodStartTime"]))
    assert invoices, f"{org} has no {state or ''} invoice"
    return invoices


def _oldest(world: World, org: str, state: str | None = None) -> dict[str, Any]:
    return _by_period(world, org, state)[0]


def _newest(world: World, org: str, state: str | None = None) -> dict[str, Any]:
    # test_console.py voids org_hooli's oldest finalized invoice: never the same one.
    return _by_period(world, org, state)[-1]


def _audit(world: World, action: str, target: str) -> list[dict[str, Any]]:
    reply = world.gateway(
        "GET", f"{ADMIN}/audit", STAFF, params={"action": action, "target": target}
    )
    assert reply.status_code == 200, reply.text
    entries: list[dict[str, Any]] = reply.json().get("entries", [])
    return entries


def _draft_of_an_upgrade(world: World, org: str, package_code: str) -> dict[str, Any]:
    """A draft invoice of ``org``: an immediate upgrade billed while drafts wait.

    The suite finalizes every invoice as it is built (no grace period), so
    invoicing runs with one for the upgrade only; its finalize job is off in
    the suite (INVOICING_FINALIZE_INTERVAL_SECONDS=0), so the draft stays one
    after invoicing is back to normal.
    """
    packages = world.gateway("GET", f"{ADMIN}/packages", STAFF, params={"pageSize": "100"})
    (package,) = [p for p in packages.json()["packages"] if p["code"] == package_code]
    world.suite.stop_process("invoicing")
    world.suite.start_process("invoicing", {"INVOICING_GRACE_PERIOD_SECONDS": "86400"})
    try:
        world.suite.wait_healthy(60)
        changed = world.gateway(
            "POST",
            f"{ADMIN}/subscriptions/{world.seeded.subscriptions[org]}:changePlan",
            STAFF,
            json={
                "packageId": package["packageId"],
                "timing": "PLAN_CHANGE_TIMING_IMMEDIATE",
                "requestId": f"browser-upgrade-{org}",
            },
        )
        assert changed.status_code == 200, changed.text
        deadline = time.monotonic() + 30
        while not (drafts := world.invoices(org, "INVOICE_STATE_DRAFT")):
            assert time.monotonic() < deadline, "the upgrade billed no draft"
            time.sleep(0.3)
    finally:
        world.suite.stop_process("invoicing")
        world.suite.start_process("invoicing")
        world.suite.wait_healthy(60)
    (draft,) = drafts
    return draft


def _form_fields(page: Page) -> dict[str, str | float | bool]:
    return {
        name: page.locator(f"form.once input[name={name}]").input_value()
        for name in ("csrf_token", "request_id")
    }


def _support_is_refused_finalize(world: World, browser: Browser, draft: dict[str, Any]) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, world.console_url, "org_demo", "billing_support")
        page.goto(f"{world.console_url}/admin/invoices/{draft['invoiceId']}")
        expect(page.locator("h1 [data-state]")).to_have_text("draft")
        expect(page.locator("[data-action]")).to_have_count(0)
        # A forged finalize: the confirmation by URL, then the gateway's 403, shown clearly.
        page.goto(f"{world.console_url}/admin/invoices/{draft['invoiceId']}/finalize")
        page.get_by_role("button", name="Finalize this invoice").click()
        expect(page.locator("#refused")).to_contain_text("Not allowed")
        expect(page.locator("#refused")).to_contain_text("403")
    finally:
        context.close()


def test_an_admin_finalizes_a_draft_once_and_sees_its_audit_entry(
    world: World, browser: Browser, page: Page
) -> None:
    draft = _draft_of_an_upgrade(world, "org_initech", "growth")
    # Support first: it sees the draft but no button, and a forged POST changes nothing.
    _support_is_refused_finalize(world, browser, draft)
    sign_in(page, world.console_url, "org_demo", "billing_admin")
    page.goto(f"{world.console_url}/admin/invoices/{draft['invoiceId']}")
    expect(page.locator("h1 [data-state]")).to_have_text("draft")
    page.locator("[data-action=finalize]").click()
    expect(page.get_by_role("heading", name=re.compile("Finalize invoice"))).to_be_visible()
    assert _audit(world, "FinalizeInvoice", draft["invoiceId"]) == []  # nothing yet
    sent = _form_fields(page)
    # A double click: the page script sends the form once, and a second POST
    # would carry the same request id anyway (replayed below).
    page.get_by_role("button", name="Finalize this invoice").dblclick()

    expect(page.get_by_role("heading", name=re.compile(r"Invoice ORGINITE-\d+"))).to_be_visible()
    # Collection starts at once with a good card: finalized, or already paid.
    expect(page.locator("h1 [data-state]")).to_have_text(re.compile("^(finalized|paid)$"))
    entry = page.locator("[data-audit-entry]")
    expect(entry.locator("[data-audit=action]")).to_have_text(
        "tally.invoicing.v1.InvoicingService.FinalizeInvoice"
    )
    expect(entry.locator("[data-audit=outcome]")).to_have_text("OK")
    expect(entry.locator("[data-audit=actor]")).to_contain_text("dev-billing_admin")
    expect(entry.locator("[data-audit=request-id]")).to_have_text(str(sent["request_id"]))
    heading = page.get_by_role("heading", name=re.compile("Invoice ORGINITE-"))
    number = re.search(r"ORGINITE-\d+", heading.inner_text())
    assert number is not None

    # The same form posted again (a reload of the POST) is a replay, not a second finalize.
    again = page.request.post(
        f"{world.console_url}/admin/invoices/{draft['invoiceId']}/finalize", form=sent
    )
    assert again.status == 200
    entries = _audit(world, "FinalizeInvoice", draft["invoiceId"])
    assert [(e["outcome"], e["requestId"]) for e in entries] == [("OK", sent["request_id"])]
    page.reload()
    expect(heading).to_contain_text(number.group())


def test_retrying_a_declined_payment_shows_the_failure_and_its_audit_entry(
    world: World, page: Page
) -> None:
    invoice = _newest(world, "org_hooli", "INVOICE_STATE_FINALIZED")
    sign_in(page, world.console_url, "org_demo", "billing_admin")
    page.goto(f"{world.console_url}/admin/invoices/{invoice['invoiceId']}")
    page.locator("[data-action=retry-payment]").click()
    expect(page.get_by_role("heading", name=re.compile("Retry payment"))).to_be_visible()
    sent = _form_fields(page)
    page.get_by_role("button", name="Charge the payment method now").click()

    attempt = page.locator("#attempt")
    expect(attempt).to_have_attribute("data-attempt-state", "failed")
    expect(attempt).to_have_attribute("role", "alert")
    expect(attempt).to_contain_text(re.compile("declined", re.IGNORECASE))
    entry = page.locator("[data-audit-entry]")
    expect(entry.locator("[data-audit=action]")).to_have_text(
        "tally.payments.v1.PaymentsService.PayInvoice"
    )
    expect(entry.locator("[data-audit=request-id]")).to_have_text(str(sent["request_id"]))
    expect(entry.locator("[data-audit=outcome]")).not_to_be_empty()
    # Still owed: the retry changed the payment's attempts, not the invoice.
    expect(page.locator("h1 [data-state]")).to_have_text("finalized")
    expect(page.locator("[data-action=retry-payment]")).to_have_count(1)


def test_a_credit_memo_credits_chosen_lines_with_violations_next_to_the_line(
    world: World, page: Page
) -> None:
    invoice = _oldest(world, "org_initech")
    assert invoice["state"] in ("INVOICE_STATE_PAID", "INVOICE_STATE_FINALIZED")
    sign_in(page, world.console_url, "org_demo", "billing_admin")
    page.goto(f"{world.console_url}/admin/invoices/{invoice['invoiceId']}/credit-memo")
    rows = page.locator("tr[data-line]")
    expect(rows.first).to_be_visible()
    # Credit the first line only: uncheck the others.
    for i in range(1, rows.count()):
        rows.nth(i).locator("input[type=checkbox]").uncheck()
    first = rows.first
    amount = first.locator("input[name='lines[0].amount']")
    remaining = amount.input_value()
    amount.fill("999999")
    page.fill("#memo", "credit by line (browser test)")
    page.get_by_role("button", name="Issue this credit memo").click()
    # Refused by invoicing (above what remains): next to the line, with what was typed.
    expect(first.locator(".field-error")).to_contain_text("more than remains")
    expect(first.locator("input[name='lines[0].amount']")).to_have_value("999999")
    expect(page.locator("#memo")).to_have_value("credit by line (browser test)")
    expect(rows.nth(1).locator("input[type=checkbox]")).not_to_be_checked()

    first.locator("input[name='lines[0].amount']").fill("1.00")
    page.get_by_role("button", name="Issue this credit memo").click()
    expect(page.get_by_role("status").first).to_contain_text("issue a credit memo")
    entry = page.locator("[data-audit-entry]")
    expect(entry.locator("[data-audit=action]")).to_have_text(
        "tally.invoicing.v1.InvoicingService.IssueCreditMemo"
    )
    expect(entry.locator("[data-audit=outcome]")).to_have_text("OK")
    expect(page.locator("tfoot")).to_contain_text("Credited")
    memos = world.gateway(
        "GET", f"{ADMIN}/creditMemos", STAFF, params={"invoiceId": invoice["invoiceId"]}
    ).json()["creditMemos"]
    assert len(memos) == 1
    (line,) = memos[0]["lines"]
    assert line["invoiceLineId"] and line["amount"]["amountMinor"] == "100"
    # What remains of the line is shown less the memo the next time.
    page.goto(f"{world.console_url}/admin/invoices/{invoice['invoiceId']}/credit-memo")
    assert page.locator("input[name='lines[0].amount']").input_value() != remaining


def test_the_usage_explorer_filters_events_shows_aggregates_and_a_backfill_dry_run(
    world: World, page: Page
) -> None:
    listed = world.gateway(
        "GET",
        f"{ADMIN}/orgs/org_demo/usage/events",
        STAFF,
        params={"metricCode": "storage_gb", "pageSize": "1"},
    ).json()["events"]
    key = listed[0]["event"]["idempotencyKey"]
    assert re.fullmatch(r"seed:org_demo:\d{4}-\d\d-\d\d:storage", key)

    sign_in(page, world.console_url, "org_demo", "billing_admin")
    page.get_by_role("link", name="Usage explorer").click()
    page.fill("#org", "org_demo")
    page.fill("#metric_code", "storage_gb")
    page.get_by_role("button", name="Show events").click()
    events = page.locator("table.events tbody tr[data-event]")
    expect(events.first).to_be_visible()
    assert events.count() > 1
    assert set(events.evaluate_all("rows => rows.map(r => r.dataset.metric)")) == {"storage_gb"}
    expect(page.locator("a[rel=next]")).to_have_attribute(
        "href", re.compile("metric_code=storage_gb")
    )

    page.fill("#metric_code", "")
    page.fill("#idempotency_key", key)
    page.get_by_role("button", name="Show events").click()
    expect(events).to_have_count(1)
    expect(events.first).to_have_attribute("data-event", key)

    aggregates = page.locator("table.aggregates tr[data-metric=api_calls]")
    expect(aggregates.first).to_be_visible()
    assert aggregates.count() >= 2  # the current period and closed ones
    counts = aggregates.locator("[data-count]").all_inner_texts()
    assert any(int(c) > 0 for c in counts)

    now = datetime.now(UTC)
    page.fill("#backfill-start", f"{month_start(now, 0):%F}")
    page.fill("#backfill-end", f"{now + timedelta(days=1):%F}")
    page.get_by_role("button", name="Show what a backfill would change").click()
    answer = page.locator("#backfill-answer")
    expect(answer).to_contain_text("Dry run")
    assert int(answer.locator("[data-backfill=scanned]").inner_text()) > 0
    assert int(answer.locator("[data-backfill=checked]").inner_text()) > 0
    # Nothing was changed: the aggregates read the same afterwards.
    assert (
        page.locator("table.aggregates tr[data-metric=api_calls] [data-count]").all_inner_texts()
        == counts
    )


def test_support_sees_no_retry_or_backfill(world: World, page: Page) -> None:
    owed = _newest(world, "org_hooli", "INVOICE_STATE_FINALIZED")
    sign_in(page, world.console_url, "org_demo", "billing_support")
    page.goto(f"{world.console_url}/admin/invoices/{owed['invoiceId']}")
    expect(page.locator("h1 [data-state]")).to_have_text("finalized")
    expect(page.locator("[data-action]")).to_have_count(0)
    page.goto(f"{world.console_url}/admin/usage?org=org_demo")
    expect(page.locator("table.events tbody tr[data-event]").first).to_be_visible()
    expect(page.locator("#backfill")).to_have_count(0)
