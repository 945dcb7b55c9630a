"""The staff read pages in-process: timeline order, the audit form, the admin nav guard.

The gateway is an httpx MockTransport answering as the real one does
(tests/browser/test_admin_support.py drives the same pages against the suite).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.admin_audit import query, rfc3339
from console.timeline import timeline
from tests.support.console_app import production_settings
from tests.support.gateway import token
from tests.unit.console.conftest import MakeConsole

ADMIN = token(org="org_demo", roles=["billing_admin"])
SUPPORT = token(org="org_demo", roles=["billing_support"])
BASE = datetime(2026, 9, 1, tzinfo=UTC)
Handler = Callable[[httpx.Request], httpx.Response]


def at(seconds: int) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


instants = st.integers(min_value=0, max_value=10_000_000)


@given(
    created=instants,
    invoices=st.lists(st.tuples(instants, st.booleans(), instants), max_size=6),
    payments=st.lists(st.tuples(instants, st.booleans()), max_size=6),
    closes=st.lists(instants, max_size=4),
)
def test_the_timeline_is_newest_first_and_has_every_invoice_and_payment(
    created: int,
    invoices: list[tuple[int, bool, int]],
    payments: list[tuple[int, bool]],
    closes: list[int],
) -> None:
    subscription = {"createTime": at(created), "startTime": at(created), "packageCode": "x"}
    listed_invoices = [
        {
            "invoiceId": f"inv-{i}",
            "number": f"N-{i}",
            "finalizeTime": at(finalized),
            "paidTime": at(finalized + paid_after) if paid else None,
            "total": {"currencyCode": "USD", "amountMinor": "1250"},
        }
        for i, (finalized, paid, paid_after) in enumerate(invoices)
    ]
    listed_payments = [
        {
            "paymentId": f"pay-{i}",
            "invoiceId": f"inv-{i}",
            "amount": {"currencyCode": "USD", "amountMinor": "1250"},
            "succeedTime": at(when) if succeeded else None,
            "updateTime": at(when),
            "state": "PAYMENT_STATE_SUCCEEDED" if succeeded else "PAYMENT_STATE_RETRY_SCHEDULED",
            "failureCode": "" if succeeded else "card_declined",
        }
        for i, (when, succeeded) in enumerate(payments)
    ]
    periods = [{"closed": True, "closeTime": at(c), "periodStartTime": at(0)} for c in closes]
    events = timeline(subscription, [], periods, listed_invoices, listed_payments)
    times = [e.when for e in events]
    assert times == sorted(times, reverse=True)
    finalized = [e for e in events if e.kind == "invoice_finalized"]
    assert sorted(e.link for e in finalized) == sorted(
        f"/admin/invoices/inv-{i}" for i in range(len(invoices))
    )
    assert all("$12.50" in e.text for e in finalized)
    assert len([e for e in events if e.kind.startswith("payment")]) == len(payments)
    assert len([e for e in events if e.kind == "period_closed"]) == len(closes)
    assert [e.kind for e in events].count("created") == 1


def test_an_open_period_and_a_pending_schedule_are_not_history() -> None:
    events = timeline(
        {"createTime": at(0)},
        [{"action": "SCHEDULE_ACTION_CANCEL", "state": "SCHEDULE_STATE_PENDING",
          "createTime": at(5), "effectiveTime": at(99)}],
        [{"closed": False, "periodEndTime": at(50)}],
    )  # fmt: skip
    assert [e.kind for e in events] == ["schedule_pending", "created"]
    assert events[0].text == "Cancel scheduled for 2026-09-01"


def test_each_change_shows_once_from_the_periods_segments() -> None:
    def segment(version: str, kind: str, start: int, end: int) -> dict[str, object]:
        return {
            "packageVersionId": version,
            "packageCode": "growth",
            "packageVersion": version,
            "kind": f"SEGMENT_KIND_{kind}",
            "startTime": at(start),
            "endTime": at(end),
        }

    periods = [  # newest first, as ListBillingPeriods answers
        {"closed": False, "segments": [segment("2", "ACTIVE", 200, 250),
                                       segment("2", "PAUSED", 250, 300)]},
        {"closed": True, "closeTime": at(200), "periodStartTime": at(0),
         "periodEndTime": at(200), "segments": [segment("1", "TRIAL", 0, 50),
                                                segment("1", "ACTIVE", 50, 120),
                                                segment("2", "ACTIVE", 120, 200)]},
    ]  # fmt: skip
    applied = {"action": "SCHEDULE_ACTION_CHANGE_PLAN", "state": "SCHEDULE_STATE_APPLIED",
               "createTime": at(10), "resolveTime": at(120)}  # fmt: skip
    events = timeline({"createTime": at(0)}, [applied], periods)
    assert [(e.kind, e.when) for e in events] == [
        ("paused", BASE + timedelta(seconds=250)),
        ("period_closed", BASE + timedelta(seconds=200)),
        ("plan_changed", BASE + timedelta(seconds=120)),
        ("trial_ended", BASE + timedelta(seconds=50)),
        ("created", BASE),
    ]
    assert events[2].text == "Plan changed to growth v2"


def test_the_audit_form_becomes_the_gateways_query() -> None:
    params, errors = query(
        {
            "org_id": " org_demo ",
            "action": "CreateMetric",
            "start_time": "2026-12-01T09:30",
            "end_time": "2026-12-02T00:00:00+02:00",
            "service": "catalog",
            "page_size": "3",
            "page_token": "abc",
        }
    )
    assert errors == {}
    assert params == [
        ("org_id", "org_demo"),
        ("action", "CreateMetric"),
        ("start_time", "2026-12-01T09:30:00Z"),
        ("end_time", "2026-12-01T22:00:00Z"),
        ("service", "catalog"),
        ("page_size", "3"),
        ("page_token", "abc"),
    ]
    _, refused = query({"start_time": "yesterday", "page_size": "many", "service": "nope"})
    assert set(refused) == {"start_time", "page_size"}
    assert rfc3339("not a time") is None


@pytest.fixture
def client_for(make_console: MakeConsole) -> Callable[[Handler], httpx.AsyncClient]:
    def make(handler: Handler) -> httpx.AsyncClient:
        return make_console(handler, production_settings())

    return make


def bearer(jwt: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt}"}


async def test_the_admin_nav_hides_when_the_gateway_says_admin_is_off(
    client_for: Callable[[Handler], httpx.AsyncClient],
) -> None:
    asked: list[str] = []

    def outside_the_cohort(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(404, json={"status": 404, "reason": "NOT_FOUND"})

    page = await client_for(outside_the_cohort).get("/admin/audit", headers=bearer(SUPPORT))
    assert page.status_code == 404
    assert "Admin billing is not enabled for your account" in page.text
    assert 'data-nav="admin-audit"' not in page.text
    # The probe is a list route, which has no "not found" of its own.
    assert asked == ["/super-admin/billing/v1/audit", "/super-admin/billing/v1/invoices"]


async def test_a_missing_subscription_is_not_found_and_keeps_the_nav(
    client_for: Callable[[Handler], httpx.AsyncClient],
) -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/invoices"):
            return httpx.Response(200, json={"invoices": []})
        return httpx.Response(404, json={"status": 404, "reason": "SUBSCRIPTION_NOT_FOUND"})

    page = await client_for(gateway).get("/admin/subscriptions?id=nope", headers=bearer(ADMIN))
    assert page.status_code == 404 and "Not found" in page.text
    assert 'data-nav="admin-subscriptions"' in page.text


async def test_an_audit_service_away_is_the_banner_naming_it(
    client_for: Callable[[Handler], httpx.AsyncClient],
) -> None:
    detail = "the audit trail of payments cannot be read now; try again"

    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503, json={"status": 503, "detail": detail, "reason": "AUDIT_UNAVAILABLE"}
        )

    page = await client_for(gateway).get("/admin/audit?org_id=org_x", headers=bearer(SUPPORT))
    assert page.status_code == 503
    assert f'role="alert">{detail}' in page.text
    assert 'value="org_x"' in page.text  # the filters stay as typed


async def test_a_refused_filter_is_shown_next_to_its_field(
    client_for: Callable[[Handler], httpx.AsyncClient],
) -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "status": 400,
                "violations": [{"field": "page_token", "description": "bound to other filters"}],
            },
        )

    page = await client_for(gateway).get(
        "/admin/audit?actor=<b>x</b>&page_token=t", headers=bearer(SUPPORT)
    )
    assert page.status_code == 400
    assert 'data-field="page_token">bound to other filters' in page.text
    assert "&lt;b&gt;x&lt;/b&gt;" in page.text and "<b>x</b>" not in page.text


async def test_support_gets_no_entitlement_check_and_admins_do(
    client_for: Callable[[Handler], httpx.AsyncClient],
) -> None:
    posts: list[str] = []
    subscription = {
        "subscriptionId": "sub_1",
        "orgId": "org_demo",
        "state": "SUBSCRIPTION_STATE_ACTIVE",
        "packageVersionId": "pv_1",
        "createTime": at(0),
    }

    def gateway(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            posts.append(path)
            return httpx.Response(
                200,
                json={"allowed": True, "reason": "ENTITLEMENT_REASON_WITHIN_LIMIT",
                      "remaining": "60", "subscriptionId": "sub_1"},
            )  # fmt: skip
        if path.endswith("/orgs/org_demo/subscriptions"):
            return httpx.Response(200, json={"subscriptions": [subscription]})
        if path.endswith("/packageVersions/pv_1"):
            limit = {"featureKey": "api_calls", "limit": "100", "metricCode": "api_calls"}
            return httpx.Response(200, json={"packageVersion": {"featureLimits": [limit]}})
        if path.endswith("/aggregates"):
            return httpx.Response(
                200, json={"aggregates": [{"metricCode": "api_calls", "value": "40"}]}
            )
        return httpx.Response(200, json={})

    client = client_for(gateway)
    seen = await client.get("/admin/subscriptions?org=org_demo", headers=bearer(SUPPORT))
    assert seen.status_code == 200 and posts == []
    assert "billing_admin only" in seen.text and ">40<" in seen.text
    checked = await client.get("/admin/subscriptions?org=org_demo", headers=bearer(ADMIN))
    assert checked.status_code == 200
    assert posts == ["/super-admin/billing/v1/orgs/org_demo/entitlements:check"]
    assert "allowed: within limit, 60 left" in checked.text


async def test_missing_parts_of_an_orgs_context_are_named_in_the_banner(
    client_for: Callable[[Handler], httpx.AsyncClient],
) -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/orgs/org_x/context"):
            return httpx.Response(
                200,
                json={
                    "orgId": "org_x",
                    "invoices": [],
                    "paymentMethods": None,
                    "unavailable": [{"part": "paymentMethods", "status": 503}],
                },
            )
        if request.url.path.endswith("/audit"):
            return httpx.Response(200, json={"entries": []})
        return httpx.Response(503, json={"status": 503, "reason": "PAYMENTS_UNAVAILABLE"})

    page = await client_for(gateway).get("/admin/orgs/org_x", headers=bearer(SUPPORT))
    assert page.status_code == 200
    assert "missing right now (paymentMethods, payments)" in page.text
    assert "Payments are missing right now." in page.text
    assert "No audit entries." in page.text
