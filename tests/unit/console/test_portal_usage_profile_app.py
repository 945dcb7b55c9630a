"""The usage and billing profile pages in-process, against a fake gateway."""

from __future__ import annotations

import csv
import io
import json
import re

import httpx
import pytest

from console.portal_usage import CSV_HEADER
from tests.support.console_app import form_value
from tests.support.gateway import token
from tests.unit.console.conftest import MakeConsole

PORTAL = "/portal/billing/v1"
AUTH = {
    "Authorization": f"Bearer {token(org='org_umbrella', permissions=['organization:billing'])}"
}
SUBSCRIPTION = {
    "subscriptionId": "sub_1",
    "state": "SUBSCRIPTION_STATE_TRIALING",
    "packageVersionId": "pv_1",
    "currentPeriodStartTime": "2026-12-01T00:00:00Z",
    "currentPeriodEndTime": "2027-01-01T00:00:00Z",
}
VISA = {
    "paymentMethodId": "pm_tally_1",
    "card": {"brand": "visa", "last4": "4242", "expMonth": 4, "expYear": 2030},
    "isDefault": True,
}


def problem(status: int, violations: list[dict[str, str]] | None = None) -> httpx.Response:
    body: dict[str, object] = {"status": status, "title": "Refused", "detail": "refused"}
    if violations:
        body["violations"] = violations
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class FakeGateway:
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
        if path == f"{PORTAL}/usage:query":
            start = request.url.params["startTime"]
            return httpx.Response(
                200,
                json={
                    "aggregation": "AGGREGATION_SUM",
                    "buckets": [
                        {"startTime": start, "endTime": start, "value": "-1.50", "eventCount": "2"}
                    ],
                },
            )
        if path == f"{PORTAL}/billingProfile":
            return httpx.Response(200, json={"billingProfile": {"legalName": "Umbrella"}})
        if path == f"{PORTAL}/paymentMethods":
            return httpx.Response(200, json={"paymentMethods": [VISA]})
        if path == f"{PORTAL}/setupIntents":
            return httpx.Response(
                200, json={"setupIntentId": "seti_1", "publishableKey": "pk_test_tally_emulator"}
            )
        return httpx.Response(404, json={"status": 404, "title": "Not Found"})

    def calls(self, suffix: str) -> list[httpx.Request]:
        return [r for r in self.sent if r.url.path.endswith(suffix)]


@pytest.fixture
def portal(make_console: MakeConsole) -> tuple[httpx.AsyncClient, FakeGateway]:
    fake = FakeGateway()
    return make_console(fake, headers=AUTH), fake


async def test_the_csv_is_an_attachment_with_a_header_and_hourly_buckets_for_a_day(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    answer = await client.get("/portal/usage.csv", params={"metric": "=cmd", "range": "day"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert re.fullmatch(
        r'attachment; filename="usage-org_umbrella-_cmd-day-\d{8}\.csv"',
        answer.headers["content-disposition"],
    )
    (asked,) = fake.calls("usage:query")
    assert asked.url.params["bucket"] == "TIME_BUCKET_HOUR"
    assert asked.url.params["subscriptionId"] == "sub_1"
    assert asked.url.params["metricCode"] == "=cmd"
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert tuple(rows[0]) == CSV_HEADER
    # The text cell is guarded; the negative number stays a number.
    assert rows[1][0] == "'=cmd" and rows[1][3] == "-1.50"


async def test_a_profile_violation_is_shown_next_to_its_field_with_the_form_as_typed(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    page = await client.get("/portal/billing-profile")
    assert (
        page.status_code == 200
        and form_value(page.text, "billing_profile.legal_name") == "Umbrella"
    )
    fake.refuse[f"{PORTAL}/billingProfile"] = problem(
        400, [{"field": "billing_profile.invoice_email", "description": "is not an email address"}]
    )
    answer = await client.post(
        "/portal/billing-profile",
        data={
            "csrf_token": form_value(page.text, "csrf_token"),
            "request_id": form_value(page.text, "request_id"),
            "billing_profile.invoice_email": "<b>nope</b>",
            "billing_profile.legal_name": "Umbrella",
        },
    )
    assert answer.status_code == 400
    (patched,) = [r for r in fake.sent if r.method == "PATCH"]
    body = json.loads(patched.content)
    assert body["billingProfile"]["invoiceEmail"] == "<b>nope</b>"
    assert (
        body["requestId"] == patched.headers["x-request-id"] == form_value(page.text, "request_id")
    )
    error = answer.text.split('data-field="billing_profile.invoice_email"')[1]
    assert error.startswith(">is not an email address<")
    assert form_value(answer.text, "billing_profile.invoice_email") == "&lt;b&gt;nope&lt;/b&gt;"
    assert form_value(answer.text, "request_id") == form_value(page.text, "request_id")


async def test_a_card_token_that_is_not_a_test_card_never_reaches_the_gateway(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    form = await client.get("/portal/payment-methods/new")
    assert form.status_code == 200 and 'value="pm_card_visa"' in form.text
    answer = await client.post(
        "/portal/payment-methods/new",
        data={
            "csrf_token": form_value(form.text, "csrf_token"),
            "request_id": form_value(form.text, "request_id"),
            "provider_payment_method_id": "pm_someone_elses",
        },
    )
    assert answer.status_code == 400
    assert 'data-field="provider_payment_method_id"' in answer.text
    assert fake.calls(":attach") == []


async def test_a_refused_set_default_is_the_clear_403_and_payments_down_is_the_banner(
    portal: tuple[httpx.AsyncClient, FakeGateway],
) -> None:
    client, fake = portal
    page = await client.get("/portal/billing-profile")
    fake.refuse[f"{PORTAL}/paymentMethods/pm_tally_1:setDefault"] = problem(403)
    refused = await client.post(
        "/portal/payment-methods/pm_tally_1/default",
        data={"csrf_token": form_value(page.text, "csrf_token"), "request_id": "r-1"},
    )
    assert refused.status_code == 403 and 'id="refused"' in refused.text
    assert "Not allowed" in refused.text
    fake.refuse[f"{PORTAL}/paymentMethods"] = httpx.Response(503, json={"status": 503})
    down = await client.get("/portal/billing-profile")
    assert down.status_code == 200
    assert "Payment methods are unavailable right now." in down.text
    assert 'role="alert"' in down.text and "payment methods" in down.text
    assert 'name="billing_profile.legal_name"' in down.text  # the profile form still works
