"""The admin catalog editor in a real chromium against the seeded suite.

Uses only metrics and packages it creates (codes ``ui_…``); the seeded
catalog (starter, growth, enterprise, api_calls, storage_gb) is only read.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from console.money import format_money
from tests.support.console import World, sign_in
from tests.support.gateway import token

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

ADMIN = token(roles=["billing_admin"])
TIER = "draft.charges[0].graduated.tiers[{}].{}"


def field(page: Page, name: str) -> Any:
    return page.locator(f'[name="{name}"]')


def package(world: World, package_id: str) -> dict[str, Any]:
    reply = world.gateway("GET", f"/super-admin/billing/v1/packages/{package_id}", ADMIN)
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()["package"]
    return found


def test_an_admin_builds_rates_and_publishes_a_package(world: World, page: Page) -> None:
    suffix = uuid.uuid4().hex[:6]
    metric_code, package_code = f"ui_calls_{suffix}", f"ui_pro_{suffix}"
    sign_in(page, world.console_url, "org_demo", "billing_admin")
    page.goto(f"{world.console_url}/admin/catalog")

    form = page.locator("#new-metric")
    form.locator('[name="metric.code"]').fill(metric_code)
    form.locator('[name="metric.name"]').fill("UI calls")
    form.locator('[name="metric.aggregation"]').select_option("AGGREGATION_COUNT")
    form.get_by_role("button", name="Create metric").click()
    expect(page.get_by_role("status")).to_contain_text(f"Metric {metric_code} created")
    expect(page.locator(f"tr[data-metric={metric_code}] [data-state]")).to_have_text("active")

    page.get_by_role("link", name="New package").click()
    field(page, "code").fill(package_code)
    field(page, "draft.name").fill("UI Pro")
    page.get_by_role("button", name="Add charge").click()
    field(page, "draft.charges[0].metric_id").select_option(label=metric_code)
    field(page, "draft.charges[0].model").select_option("graduated")
    page.get_by_role("button", name="Apply model").click()
    page.get_by_role("button", name="Add tier").click()
    expect(page.locator("table.tiers tr[data-tier]")).to_have_count(2)
    field(page, TIER.format(0, "up_to")).fill("100")
    field(page, TIER.format(0, "unit_amount")).fill("0")
    field(page, TIER.format(1, "unit_amount")).fill("0.0125")
    field(page, TIER.format(1, "flat_amount")).fill("2")
    page.get_by_role("button", name="Add feature limit").click()
    field(page, "draft.feature_limits[0].feature_key").fill("ui_calls")
    field(page, "draft.feature_limits[0].limit").fill("5000")
    field(page, "draft.feature_limits[0].enforcement").select_option("LIMIT_ENFORCEMENT_HARD")
    field(page, "draft.feature_limits[0].resets_each_period").check()
    field(page, "draft.feature_limits[0].metric_code").select_option(metric_code)
    page.get_by_role("button", name="Create package").click()
    expect(page.get_by_role("status")).to_have_text("Draft saved.")
    expect(page.get_by_role("heading", name=f"Package {package_code}")).to_be_visible()
    package_id = page.url.split("/packages/")[1].split("?")[0]

    # The box rates the charge as typed, through the gateway's rating engine.
    field(page, "preview.quantity").fill("1500")
    page.get_by_role("button", name="Rate", exact=True).click()
    charge = {
        "graduated": {
            "tiers": [
                {"up_to": "100", "unit_amount": "0"},
                {"unit_amount": "0.0125", "flat_amount": "2"},
            ]
        }
    }
    reply = world.gateway(
        "POST",
        "/super-admin/billing/v1/charges:preview",
        ADMIN,
        json={"charge": charge, "currency_code": "USD", "quantity": "1500"},
    )
    assert reply.status_code == 200, reply.text
    engine = reply.json()
    shown = page.locator("#preview [data-amount-minor]")
    expect(shown).to_have_attribute("data-amount-minor", str(engine["amountMinor"]))
    expect(shown).to_have_text(format_money(engine))
    expect(page.locator("#preview table.breakdown tr[data-step]")).to_have_count(
        len(engine["details"])
    )

    # Tiers out of order: the catalog's violation next to the tier's bound.
    page.get_by_role("button", name="Add tier").click()
    expect(page.locator("table.tiers tr[data-tier]")).to_have_count(3)
    field(page, TIER.format(1, "up_to")).fill("50")
    field(page, TIER.format(1, "unit_amount")).fill("0.01")
    page.get_by_role("button", name="Save draft").click()
    violation = page.locator(
        f'tr[data-tier="1"] .field-error[data-field="{TIER.format(1, "up_to")}"]'
    )
    expect(violation).to_contain_text("increasing order")
    expect(field(page, TIER.format(1, "up_to"))).to_have_value("50")  # what was typed stays
    assert len(package(world, package_id)["draftVersion"]["charges"][0]["graduated"]["tiers"]) == 2

    page.get_by_role("link", name="Publish draft…").click()
    expect(page.get_by_role("heading", name=f"Publish package: {package_code}")).to_be_visible()
    page.get_by_role("button", name="Publish this draft").click()
    expect(page.get_by_role("status")).to_have_text("Published version 1.")
    expect(page.locator("h1 [data-state]")).to_have_text("active")
    expect(page.get_by_role("link", name="Publish draft…")).to_have_count(0)

    published = package(world, package_id)
    assert published["state"] == "PACKAGE_STATE_ACTIVE"
    version = published["publishedVersion"]
    assert version["charges"][0]["metricCode"] == metric_code
    (limit,) = version["featureLimits"]
    assert limit["featureKey"] == "ui_calls" and limit["metricCode"] == metric_code
    assert limit["resetsEachPeriod"] and limit["enforcement"] == "LIMIT_ENFORCEMENT_HARD"


def test_support_sees_the_catalog_without_buttons_and_a_forged_publish_is_refused(
    world: World, page: Page
) -> None:
    code = f"ui_support_{uuid.uuid4().hex[:6]}"
    created = world.gateway(
        "POST",
        "/super-admin/billing/v1/packages",
        ADMIN,
        json={
            "code": code,
            "draft": {
                "name": "Support view",
                "currency_code": "EUR",
                "billing_interval": "BILLING_INTERVAL_MONTHLY",
                "base_fee_amount": "10",
                "base_fee_timing": "BASE_FEE_TIMING_IN_ADVANCE",
            },
        },
    )
    assert created.status_code == 200, created.text
    package_id = created.json()["package"]["packageId"]

    sign_in(page, world.console_url, "org_demo", "billing_support")
    page.goto(f"{world.console_url}/admin/catalog")
    expect(page.locator("tr[data-package=starter]")).to_be_visible()
    expect(page.get_by_role("link", name="New package")).to_have_count(0)
    expect(page.locator("#new-metric")).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile("Archive"))).to_have_count(0)

    page.locator(f"tr[data-package={code}] a").click()
    expect(page.get_by_role("heading", name=f"Package {code}")).to_be_visible()
    expect(field(page, "draft.name")).to_have_value("Support view")
    expect(field(page, "draft.name")).to_be_disabled()
    expect(page.get_by_role("link", name=re.compile("Publish"))).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Save|Add|Rate"))).to_have_count(0)

    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert csrf
    forged = page.request.post(
        f"{world.console_url}/admin/catalog/packages/{package_id}/publish",
        form={"csrf_token": csrf, "request_id": uuid.uuid4().hex},
    )
    assert forged.status == 403
    assert "Not allowed: your role may view the catalog but not change it" in forged.text()
    assert package(world, package_id)["state"] == "PACKAGE_STATE_DRAFT"


def test_archiving_a_used_metric_is_refused_until_its_package_is_archived(
    world: World, page: Page
) -> None:
    suffix = uuid.uuid4().hex[:6]
    metric = world.gateway(
        "POST",
        "/super-admin/billing/v1/metrics",
        ADMIN,
        json={
            "metric": {"code": f"ui_gb_{suffix}", "name": "GB", "aggregation": "AGGREGATION_COUNT"}
        },
    )
    assert metric.status_code == 200, metric.text
    metric_id = metric.json()["metric"]["metricId"]
    created = world.gateway(
        "POST",
        "/super-admin/billing/v1/packages",
        ADMIN,
        json={
            "code": f"ui_gb_plan_{suffix}",
            "draft": {
                "name": "GB plan",
                "currency_code": "JPY",
                "billing_interval": "BILLING_INTERVAL_YEARLY",
                "charges": [{"metric_id": metric_id, "standard": {"unit_amount": "3"}}],
            },
        },
    )
    assert created.status_code == 200, created.text
    package_id = created.json()["package"]["packageId"]
    published = world.gateway(
        "POST", f"/super-admin/billing/v1/packages/{package_id}:publish", ADMIN, json={}
    )
    assert published.status_code == 200, published.text

    sign_in(page, world.console_url, "org_demo", "billing_admin")
    archive_metric = f"{world.console_url}/admin/catalog/metrics/{metric_id}/archive"
    page.goto(archive_metric)
    page.get_by_role("button", name="Archive this metric").click()
    expect(page.get_by_role("alert")).to_contain_text(f"ui_gb_plan_{suffix}")

    page.goto(f"{world.console_url}/admin/catalog/packages/{package_id}")
    page.get_by_role("link", name="Archive…").click()
    page.get_by_role("button", name="Archive this package").click()
    expect(page.get_by_role("status")).to_have_text("Package archived.")
    expect(page.locator("h1 [data-state]")).to_have_text("archived")
    expect(page.get_by_role("button", name="Save draft")).to_have_count(0)

    page.goto(archive_metric)
    page.get_by_role("button", name="Archive this metric").click()
    expect(page.get_by_role("status")).to_have_text("Metric archived.")
    expect(page.locator(f"tr[data-metric=ui_gb_{suffix}] [data-state]")).to_have_text("archived")
