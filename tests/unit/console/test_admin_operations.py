"""Admin invoice operations and the usage explorer: their pure parts, and the app in-process.

The gateway is an httpx MockTransport answering as the real one does;
tests/browser/test_admin_operations.py drives the same pages against the suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import FormData

from console.admin import OPERATIONS, _credit_body, credit_problem_fields, credit_rows
from console.admin_usage import parse_time, time_params
from console.gateway import Problem
from tests.support.console_app import GatewayHandler, form_value, production_settings
from tests.support.gateway import token
from tests.unit.console.conftest import MakeConsole

ADMIN_TOKEN = token(roles=["billing_admin"])
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def usd(minor: int) -> dict[str, str]:
    return {"currencyCode": "USD", "amountMinor": str(minor)}


INVOICE: dict[str, Any] = {
    "invoiceId": "inv_1",
    "orgId": "org_x",
    "currencyCode": "USD",
    "state": "INVOICE_STATE_PAID",
    "total": usd(6000),
    "lines": [
        {"lineId": "li_fee", "description": "Base fee", "amount": usd(4900)},
        {"lineId": "li_calls", "description": "API calls", "amount": usd(1100)},
        {"lineId": "li_credit", "description": "Goodwill", "amount": usd(-500)},
    ],
}


def test_credit_rows_are_the_positive_lines_less_what_earlier_memos_credited() -> None:
    memos: list[dict[str, Any]] = [
        {"lines": [{"invoiceLineId": "li_fee", "amount": usd(900)}, {"amount": usd(50)}]},
        {"lines": [{"invoiceLineId": "li_fee", "amount": usd(4500)}]},
    ]
    rows = credit_rows(INVOICE, memos)
    assert [(r.row, r.line["lineId"], r.remaining_minor, r.remaining) for r in rows] == [
        (0, "li_fee", 0, "0.00"),  # over-credited never shows as negative
        (1, "li_calls", 1100, "11.00"),
    ]


def test_the_body_credits_the_chosen_lines_and_the_plain_amount_in_minor_units() -> None:
    rows = credit_rows(INVOICE, [])
    form = FormData(
        [
            ("credit_line", "li_calls"),
            ("lines[0].amount", "49.00"),  # not chosen: ignored
            ("lines[1].amount", "2.5"),
            ("lines[1].description", ""),
            ("lines[2].amount", "0.75"),
            ("lines[2].description", "rounding"),
            ("reason", "CREDIT_MEMO_REASON_BILLING_ERROR"),
        ]
    )
    body, errors, sent = _credit_body(form, "USD", rows)
    assert errors == {}
    assert sent == [1, 2]
    assert body["reason"] == "CREDIT_MEMO_REASON_BILLING_ERROR"
    assert body["lines"] == [
        {"invoiceLineId": "li_calls", "description": "API calls", "amount": usd(250)},
        {"description": "rounding", "amount": usd(75)},
    ]


@pytest.mark.parametrize("typed", ["", "abc", "1.005", "NaN", "Infinity"])
def test_an_amount_that_is_not_exact_in_the_currency_is_refused_next_to_its_row(
    typed: str,
) -> None:
    rows = credit_rows(INVOICE, [])
    form = FormData([("credit_line", "li_fee"), ("lines[0].amount", typed)])
    _, errors, sent = _credit_body(form, "USD", rows)
    assert sent == [0]
    assert set(errors) == {"lines[0].amount"}


def test_nothing_chosen_and_no_amount_asks_for_the_plain_amount() -> None:
    _, errors, sent = _credit_body(FormData([]), "JPY", credit_rows(INVOICE, []))
    assert sent == [2]
    assert "at most 0 decimals" in errors["lines[2].amount"]


def test_the_gateways_violations_land_on_the_form_row_they_came_from() -> None:
    rows = credit_rows(INVOICE, [])
    problem = Problem(
        400,
        violations={"lines[0].amount.amount_minor": "must be positive", "reason": "unknown"},
    )
    assert credit_problem_fields(problem, [1, 2], rows) == {
        "lines[1].amount.amount_minor": "must be positive",
        "reason": "unknown",
    }
    exceeded = Problem(
        409,
        detail="line li_calls: 999900 is above what remains (1100)",
        reason="CREDIT_EXCEEDS_REMAINING",
    )
    assert credit_problem_fields(exceeded, [1], rows) == {
        "lines[1].amount": "more than remains of this line (11.00)"
    }


def test_retry_payment_is_offered_only_while_something_is_due() -> None:
    retry, finalize = OPERATIONS["retry-payment"], OPERATIONS["finalize"]
    owed = {"state": "INVOICE_STATE_FINALIZED", "amountDue": usd(100)}
    assert retry.offered(owed)
    assert not retry.offered({**owed, "amountDue": usd(0)})
    assert not retry.offered({**owed, "state": "INVOICE_STATE_PAID"})
    assert finalize.offered({"state": "INVOICE_STATE_DRAFT"})
    assert not finalize.offered(owed)


@given(st.datetimes(timezones=st.sampled_from([UTC, None])))
def test_a_typed_time_is_the_same_instant_in_utc(when: datetime) -> None:
    when = when.replace(microsecond=0)
    parsed = parse_time(when.isoformat())
    assert parsed is not None
    expected = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    assert datetime.fromisoformat(parsed.replace("Z", "+00:00")) == expected


def test_times_from_the_form() -> None:
    assert parse_time("2026-12-01") == "2026-12-01T00:00:00Z"
    assert parse_time("2026-12-01T10:30") == "2026-12-01T10:30:00Z"
    assert parse_time("2026-12-01T10:30:00+02:00") == "2026-12-01T08:30:00Z"
    assert parse_time("yesterday") is None
    params, errors = time_params({"start_time": "2026-12-01", "end_time": "soon"})
    assert params == {"startTime": "2026-12-01T00:00:00Z"}
    assert set(errors) == {"end_time"}


# -- the app in-process --------------------------------------------------------


@pytest.fixture
def client_for(make_console: MakeConsole) -> Callable[..., httpx.AsyncClient]:
    def make(handler: GatewayHandler) -> httpx.AsyncClient:
        settings = production_settings(session_https_only=False)
        return make_console(handler, settings, base_url="http://c")

    return make


async def test_finalize_sends_the_forms_request_id_and_shows_the_entry_it_wrote(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    draft = {**INVOICE, "state": "INVOICE_STATE_DRAFT", "number": ""}
    posts: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            posts.append(request)
            return httpx.Response(200, json={"invoice": {**draft, "number": "X-1"}})
        if path.endswith("/audit"):
            assert request.url.params["action"] == "FinalizeInvoice"
            assert request.url.params["service"] == "invoicing"
            rid = posts[-1].headers["x-request-id"] if posts else ""
            entry = {"action": "tally.invoicing.v1.InvoicingService.FinalizeInvoice"}
            return httpx.Response(
                200,
                json={
                    "entries": [
                        # A newer entry of someone else's request is not this operation's.
                        {**entry, "requestId": "other", "actor": "someone-else"},
                        {**entry, "requestId": rid, "actor": "dev-billing_admin", "outcome": "OK"},
                    ]
                },
            )
        return httpx.Response(
            200, json={"invoice": draft if not posts else {**draft, "number": "X-1"}}
        )

    client = client_for(gateway)
    page = await client.get("/admin/invoices/inv_1", headers=HEADERS)
    assert 'data-action="finalize"' in page.text and 'data-action="void"' not in page.text
    form = await client.get("/admin/invoices/inv_1/finalize", headers=HEADERS)
    rid = form_value(form.text, "request_id")
    done = await client.post(
        "/admin/invoices/inv_1/finalize",
        headers=HEADERS,
        data={"csrf_token": form_value(form.text, "csrf_token"), "request_id": rid},
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/admin/invoices/inv_1?done=finalize&request={rid}"
    (sent,) = posts
    assert sent.url.path == "/super-admin/billing/v1/invoices/inv_1:finalize"
    assert sent.headers["x-request-id"] == rid and json.loads(sent.content) == {"requestId": rid}
    result = await client.get(done.headers["location"], headers=HEADERS)
    assert 'data-audit="actor">dev-billing_admin' in result.text
    assert "someone-else" not in result.text
    assert f"<code>{rid}</code>" in result.text


async def test_a_failed_retry_shows_the_attempts_failure(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    owed = {**INVOICE, "state": "INVOICE_STATE_FINALIZED", "amountDue": usd(6000)}
    attempt = {
        "attemptNumber": 2,
        "state": "ATTEMPT_STATE_FAILED",
        "amount": usd(6000),
        "failureCode": "card_declined",
        "failureMessage": "Your card was <b>declined</b>.",
    }

    def gateway(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            assert path.endswith("/invoices/inv_1:pay")
            return httpx.Response(200, json={"payment": {"paymentId": "pay_1"}, "attempt": attempt})
        if path.endswith("/payments/pay_1/attempts"):
            return httpx.Response(200, json={"attempts": [attempt]})
        if path.endswith("/audit"):
            return httpx.Response(503, json={"status": 503, "reason": "AUDIT_UNAVAILABLE"})
        return httpx.Response(200, json={"invoice": owed})

    client = client_for(gateway)
    form = await client.get("/admin/invoices/inv_1/retry-payment", headers=HEADERS)
    assert 'name="reason"' not in form.text
    done = await client.post(
        "/admin/invoices/inv_1/retry-payment",
        headers=HEADERS,
        data={"csrf_token": form_value(form.text, "csrf_token"), "request_id": "r-9"},
    )
    assert done.headers["location"].endswith("done=retry-payment&request=r-9&payment=pay_1")
    result = await client.get(done.headers["location"], headers=HEADERS)
    assert result.status_code == 200
    assert 'data-attempt-state="failed"' in result.text
    assert "Your card was &lt;b&gt;declined&lt;/b&gt;. [card_declined]" in result.text
    # The audit trail down leaves the result up, with the banner naming what is missing.
    assert "the audit entry" in result.text and "unavailable right now" in result.text


async def test_the_usage_explorer_passes_the_filters_and_names_a_bad_time(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    asked: list[httpx.Request] = []
    now = datetime.now(UTC).replace(microsecond=0)

    def gateway(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        path = request.url.path
        if path.endswith("/usage/events"):
            return httpx.Response(200, json={"events": [], "nextPageToken": "t2"})
        if path.endswith("/subscriptions"):
            return httpx.Response(
                200,
                json={
                    "subscriptions": [
                        {"subscriptionId": "sub_1", "state": "SUBSCRIPTION_STATE_ACTIVE"}
                    ]
                },
            )
        if path.endswith("/periods"):
            start = (now - timedelta(days=3)).isoformat().replace("+00:00", "Z")
            return httpx.Response(200, json={"periods": [{"periodStartTime": start}]})
        if path.endswith("/aggregates"):
            return httpx.Response(
                200,
                json={
                    "aggregates": [{"metricCode": "api_calls", "value": "12", "eventCount": "12"}]
                },
            )
        return httpx.Response(404, json={"status": 404})

    client = client_for(gateway)
    page = await client.get(
        "/admin/usage",
        headers=HEADERS,
        params={"org": "org_x", "metric_code": "api_calls", "start_time": "2026-12-01"},
    )
    assert page.status_code == 200
    (events,) = [r for r in asked if r.url.path.endswith("/usage/events")]
    assert events.url.path == "/super-admin/billing/v1/orgs/org_x/usage/events"
    assert dict(events.url.params) == {
        "metricCode": "api_calls",
        "startTime": "2026-12-01T00:00:00Z",
        "pageSize": "50",
    }
    assert 'data-metric="api_calls"' in page.text and "data-count>12<" in page.text
    assert "page_token=t2" in page.text and "metric_code=api_calls" in page.text
    assert 'id="backfill"' in page.text

    asked.clear()
    bad = await client.get(
        "/admin/usage", headers=HEADERS, params={"org": "org_x", "end_time": "next week"}
    )
    assert bad.status_code == 400
    assert 'data-field="end_time"' in bad.text
    assert not [r for r in asked if r.url.path.endswith("/usage/events")]
