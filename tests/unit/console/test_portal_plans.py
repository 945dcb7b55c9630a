"""The portal's plan pages in-process against a mock gateway, and their pure summaries.

tests/browser/test_portal_plans.py drives the same pages against the real suite.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.money import format_price
from console.portal_plans import charge_summary, limit_summary, plan_card
from services.kit.currency import minor_units
from tests.support.console_app import form_value
from tests.support.gateway import token
from tests.unit.console.conftest import MakeConsole

CUSTOMER = token(org="org_globex", permissions=["organization:billing"])
AUTH = {"Authorization": f"Bearer {CUSTOMER}"}
PORTAL = "/portal/billing/v1"


def version(vid: str, name: str, fee: str, number: int = 1) -> dict[str, Any]:
    return {
        "packageVersionId": vid,
        "version": number,
        "name": name,
        "currencyCode": "USD",
        "billingInterval": "BILLING_INTERVAL_MONTHLY",
        "baseFeeAmount": fee,
        "baseFeeTiming": "BASE_FEE_TIMING_IN_ADVANCE",
        "charges": [
            {
                "metricCode": "api_calls",
                "graduated": {
                    "tiers": [
                        {"upTo": "1000", "unitAmount": "0"},
                        {"upTo": "100000", "unitAmount": "0.002"},
                        {"unitAmount": "0.001"},
                    ]
                },
            }
        ],
        "featureLimits": [{"featureKey": "seats", "limit": "5"}],
    }


PACKAGES = {
    "packages": [
        {
            "packageId": "pkg_ent",
            "code": "enterprise",
            "publishedVersion": version("pv_ent", "Enterprise", "999.00"),
        },
        {
            "packageId": "pkg_start",
            "code": "starter",
            "publishedVersion": version("pv_start", "Starter", "49.00"),
        },
    ]
}
SUBSCRIPTION = {
    "subscriptionId": "sub_1",
    "state": "SUBSCRIPTION_STATE_ACTIVE",
    "packageId": "pkg_ent",
    "packageCode": "enterprise",
    "packageVersionId": "pv_ent",
    "packageVersion": 1,
    "currencyCode": "USD",
    "currentPeriodStartTime": "2026-12-01T00:00:00Z",
    "currentPeriodEndTime": "2027-01-01T00:00:00Z",
}


def money(minor: int) -> dict[str, str]:
    return {"currencyCode": "USD", "amountMinor": str(minor)}


QUOTE = {
    "direction": "CHANGE_DIRECTION_DOWNGRADE",
    "timing": "PLAN_CHANGE_TIMING_IMMEDIATE",
    "effectiveTime": "2026-12-03T13:00:00Z",
    "previousPackageVersionId": "pv_ent",
    "packageVersionId": "pv_start",
    "dueNow": {
        "currencyCode": "USD",
        "lines": [
            {"description": "Enterprise unused <b>", "quantity": "1", "amount": money(-90000)},
            {"description": "Starter base fee", "quantity": "1", "amount": money(4410)},
        ],
        "subtotal": money(-85590),
        "tax": money(0),
        "total": money(0),
    },
    "nextInvoice": {
        "currencyCode": "USD",
        "periodEndTime": "2027-01-01T00:00:00Z",
        "lines": [{"description": "Starter (January)", "quantity": "1", "amount": money(4900)}],
        "subtotal": money(4900),
        "tax": money(0),
        "total": money(4900),
    },
}


class FakeGateway:
    """Answers as the real gateway does, and keeps what the console sent."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self.refuse: dict[str, httpx.Response] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        path = request.url.path
        if path in self.refuse:
            return self.refuse[path]
        if path == f"{PORTAL}/features":
            return httpx.Response(200, json={"features": {"portal": True}})
        if path == f"{PORTAL}/subscriptions":
            return httpx.Response(200, json={"subscriptions": [SUBSCRIPTION]})
        if path == f"{PORTAL}/packages":
            return httpx.Response(200, json=PACKAGES)
        if path == f"{PORTAL}/packageVersions/pv_start":
            return httpx.Response(
                200, json={"packageVersion": version("pv_start", "Starter", "49.00")}
            )
        if path.endswith(":previewPlanChange"):
            return httpx.Response(200, json=QUOTE)
        if path.endswith(":changePlan") or path.endswith(":cancel"):
            return httpx.Response(200, json={"subscription": SUBSCRIPTION})
        return httpx.Response(404, json={"status": 404, "title": "Not Found"})


def problem(
    status: int, reason: str, detail: str, violations: list[dict[str, str]] | None = None
) -> httpx.Response:
    body = {"status": status, "title": "Bad Request", "reason": reason, "detail": detail}
    if violations:
        body["violations"] = violations  # type: ignore[assignment]
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


@pytest.fixture
def portal(make_console: MakeConsole) -> tuple[httpx.AsyncClient, FakeGateway]:
    fake = FakeGateway()
    return make_console(fake, headers=AUTH), fake


async def test_the_plan_page_shows_the_packages_side_by_side_with_the_current_one_marked(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, _ = portal
    page = await client.get("/portal/plan")
    assert page.status_code == 200
    assert 'data-package="enterprise" data-current' in page.text
    assert 'data-package="starter" data-current' not in page.text
    assert "$999.00 a month" in page.text and "$49.00 a month" in page.text
    assert "1,000 to 100,000: $0.002 each" in page.text
    # Only the other plan offers a change.
    assert 'data-choose="starter"' in page.text and 'data-choose="enterprise"' not in page.text


async def test_the_quote_page_shows_both_invoices_and_its_form_carries_the_quoted_version(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    page = await client.get(
        "/portal/plan/change", params={"package_id": "pkg_start", "timing": "now"}
    )
    assert page.status_code == 200
    (asked,) = [r for r in fake.sent if r.url.path.endswith(":previewPlanChange")]
    assert asked.url.path == f"{PORTAL}/subscriptions/sub_1:previewPlanChange"
    assert dict(asked.url.params) == {
        "packageId": "pkg_start",
        "timing": "PLAN_CHANGE_TIMING_IMMEDIATE",
    }
    assert "-$900.00" in page.text and "-$855.90" in page.text and "credit balance" in page.text
    assert "Enterprise unused &lt;b&gt;" in page.text
    assert 'data-direction="downgrade"' in page.text
    assert form_value(page.text, "package_version_id") == "pv_start"
    # Nothing has changed yet.
    assert not [r for r in fake.sent if r.method == "POST"]


async def test_confirming_sends_the_forms_request_id_and_a_second_submit_sends_it_again(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    page = await client.get(
        "/portal/plan/change", params={"package_id": "pkg_start", "timing": "period_end"}
    )
    form = {
        name: form_value(page.text, name)
        for name in (
            "csrf_token",
            "request_id",
            "subscription_id",
            "package_id",
            "package_version_id",
            "timing",
        )
    }
    for _ in range(2):
        done = await client.post("/portal/plan/change", data=form)
        assert done.status_code == 303 and done.headers["location"].startswith("/portal/plan?done=")
    posts = [r for r in fake.sent if r.url.path.endswith(":changePlan")]
    assert len(posts) == 2
    for post in posts:
        assert post.headers["x-request-id"] == form["request_id"]
        assert json.loads(post.content) == {
            "packageVersionId": "pv_start",
            "timing": "PLAN_CHANGE_TIMING_PERIOD_END",
            "requestId": form["request_id"],
        }


async def test_a_refused_quote_is_shown_next_to_the_choice(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    fake.refuse[f"{PORTAL}/subscriptions/sub_1:previewPlanChange"] = problem(
        400, "PLAN_INCOMPATIBLE", "currency EUR differs from USD"
    )
    page = await client.get(
        "/portal/plan/change", params={"package_id": "pkg_start", "timing": "period_end"}
    )
    assert page.status_code == 400
    assert 'data-refused="pkg_start"' in page.text and "another currency" in page.text
    # The choice is shown again as it was made.
    assert re.search(r'value="period_end" checked', page.text)


async def test_a_timing_that_is_not_offered_is_refused_before_any_quote(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    page = await client.get(
        "/portal/plan/change", params={"package_id": "pkg_start", "timing": "yesterday"}
    )
    assert page.status_code == 400 and 'data-field="timing"' in page.text
    assert not [r for r in fake.sent if r.url.path.endswith(":previewPlanChange")]


async def test_a_cancellation_refused_by_the_gateway_keeps_what_was_typed(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    fake.refuse[f"{PORTAL}/subscriptions/sub_1:cancel"] = problem(
        400, "INVALID_ARGUMENT", "bad request", [{"field": "reason", "description": "too long"}]
    )
    page = await client.get("/portal/plan/cancel")
    form = {
        "csrf_token": form_value(page.text, "csrf_token"),
        "request_id": form_value(page.text, "request_id"),
    }
    answer = await client.post(
        "/portal/plan/cancel", data={**form, "timing": "now", "reason": "<i>bye</i>"}
    )
    assert answer.status_code == 400
    assert '<p class="field-error" data-field="reason">too long</p>' in answer.text
    assert "&lt;i&gt;bye&lt;/i&gt;</textarea>" in answer.text
    assert form_value(answer.text, "request_id") == form["request_id"]
    assert re.search(r'value="now" checked', answer.text)


async def test_a_post_without_the_sessions_csrf_token_changes_nothing(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    await client.get("/portal/plan")
    answer = await client.post(
        "/portal/plan/change",
        data={
            "csrf_token": "forged",
            "subscription_id": "sub_1",
            "package_version_id": "pv_start",
            "timing": "now",
        },
    )
    assert answer.status_code == 403
    assert not [r for r in fake.sent if r.method == "POST"]


def test_charge_and_limit_summaries() -> None:
    assert (
        charge_summary({"metricCode": "gb", "standard": {"unitAmount": "0.25"}}, "USD")
        == "gb: $0.25 per unit"
    )
    assert (
        charge_summary(
            {
                "displayName": "Seats",
                "package": {"packageSize": "10", "packageAmount": "5", "freeUnits": "20"},
            },
            "EUR",
        )
        == "Seats: €5.00 per 10 units, first 20 free"
    )
    assert (
        charge_summary(
            {
                "metricCode": "tx",
                "percentage": {"rate": "2.9", "fixedAmount": "0.30"},
                "minimumAmount": "10",
            },
            "USD",
        )
        == "tx: 2.9% + $0.30 per transaction (minimum $10.00 a period)"
    )
    assert (
        charge_summary(
            {
                "metricCode": "calls",
                "volume": {
                    "tiers": [
                        {"upTo": "10", "unitAmount": "1", "flatAmount": "2"},
                        {"unitAmount": "0.5"},
                    ]
                },
            },
            "JPY",
        )
        == "calls: every unit at the tier reached: up to 10: ¥1 each + ¥2 flat; over 10: ¥0.5 each"
    )
    assert (
        limit_summary(
            {
                "featureKey": "api_calls",
                "limit": "100000",
                "resetsEachPeriod": True,
                "enforcement": "LIMIT_ENFORCEMENT_SOFT",
            }
        )
        == "api_calls: 100,000 a period (soft limit)"
    )
    assert limit_summary({"featureKey": "sso", "unlimited": True}) == "sso: unlimited"
    assert plan_card({"packageId": "p", "code": "draft-only"}) is None


@given(
    st.decimals(
        min_value=-(10**9), max_value=10**9, places=6, allow_nan=False, allow_infinity=False
    ),
    st.sampled_from(["USD", "EUR", "JPY", "KWD"]),
)
def test_a_price_is_shown_exactly_with_at_least_the_currencys_decimals(
    value: Decimal, code: str
) -> None:
    shown = format_price(str(value), code)
    digits = re.sub(r"[$€¥,]| [A-Z]{3}$", "", shown)
    assert Decimal(digits) == value
    assert len(digits.partition(".")[2]) >= minor_units(code)


async def test_a_refusal_about_no_package_on_the_page_is_shown_at_its_top(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    fake.refuse[f"{PORTAL}/subscriptions/sub_1:previewPlanChange"] = problem(
        404, "PACKAGE_NOT_FOUND", "no published version of pkg_gone"
    )
    page = await client.get(
        "/portal/plan/change", params={"package_id": "pkg_gone", "timing": "now"}
    )
    assert page.status_code == 404
    assert '<p class="form-error" role="alert" data-refused="">This plan is not offered.</p>' in (
        page.text
    )
