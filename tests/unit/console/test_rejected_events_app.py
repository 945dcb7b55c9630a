"""The rejection feed pages in-process: admin (/admin/usage/rejected) and
portal (/portal/rejected-events) ask ListRejectedEvents with the typed
filters, page with the gateway's token, escape what producers sent, and name
a bad filter next to its input without asking."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from console.rejected_events import REASONS, feed_params
from tests.support.console_app import GatewayHandler, production_settings
from tests.support.gateway import token
from tests.unit.console.conftest import MakeConsole

ADMIN_HEADERS = {"Authorization": f"Bearer {token(roles=['billing_support'])}"}
PORTAL_HEADERS = {
    "Authorization": f"Bearer {token(org='org_umbrella', permissions=['organization:billing'])}"
}
ROW = {
    "rejectedEventId": "7",
    "orgId": "org_x",
    "idempotencyKey": "evt-<1>",
    "metricCode": "api_cals",
    "reason": "USAGE_REJECTION_REASON_UNKNOWN_METRIC",
    "message": "no active metric with code 'api_cals'",
    "payloadJson": '{"metric_code":"<script>alert(1)</script>"}',
    "rejectTime": "2026-12-03T10:00:00Z",
}


@pytest.fixture
def client_for(make_console: MakeConsole) -> Callable[..., httpx.AsyncClient]:
    def make(handler: GatewayHandler) -> httpx.AsyncClient:
        settings = production_settings(session_https_only=False)
        return make_console(handler, settings, base_url="http://c")

    return make


def test_the_filters_become_the_gateways_parameters() -> None:
    params, errors = feed_params(
        {"reason": "PERIOD_CLOSED", "metric_code": " api_calls ", "start_time": "2026-12-01"}
    )
    assert errors == {}
    assert params == {
        "reason": "USAGE_REJECTION_REASON_PERIOD_CLOSED",
        "metricCode": "api_calls",
        "startTime": "2026-12-01T00:00:00Z",
        "pageSize": "50",
    }
    _, errors = feed_params({"reason": "NOT_A_REASON", "end_time": "tomorrow"})
    assert set(errors) == {"reason", "end_time"}
    assert "INVALID_EVENT_TIME" in REASONS


async def test_the_admin_page_lists_an_orgs_feed_escaped_and_paged(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    asked: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        path = request.url.path
        if path.endswith("/rejectedEvents"):
            return httpx.Response(200, json={"rejectedEvents": [ROW], "nextPageToken": "t2"})
        if path.endswith(("/usage/events", "/subscriptions")):
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"status": 404})

    client = client_for(gateway)
    page = await client.get(
        "/admin/usage/rejected",
        headers=ADMIN_HEADERS,
        params={"org": "org_x", "reason": "UNKNOWN_METRIC", "page_token": "t1"},
    )
    assert page.status_code == 200, page.text
    [sent] = asked
    assert sent.url.path == "/super-admin/billing/v1/orgs/org_x/rejectedEvents"
    assert dict(sent.url.params) == {
        "reason": "USAGE_REJECTION_REASON_UNKNOWN_METRIC",
        "pageSize": "50",
        "pageToken": "t1",
    }
    assert 'data-reason="UNKNOWN_METRIC"' in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text and "evt-&lt;1&gt;" in page.text
    assert "page_token=t2" in page.text and "reason=UNKNOWN_METRIC" in page.text
    assert 'rel="first"' in page.text

    # A bad filter is named next to its input and nothing is asked.
    asked.clear()
    bad = await client.get(
        "/admin/usage/rejected",
        headers=ADMIN_HEADERS,
        params={"org": "org_x", "start_time": "last week"},
    )
    assert bad.status_code == 400
    assert 'data-field="start_time"' in bad.text
    assert asked == []

    # The usage explorer links to the org's feed.
    explorer = await client.get("/admin/usage", headers=ADMIN_HEADERS, params={"org": "org_x"})
    assert 'href="/admin/usage/rejected?org=org_x"' in explorer.text


async def test_the_portal_page_asks_the_portal_route_and_shows_the_empty_feed(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    asked: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        path = request.url.path
        if path == "/portal/billing/v1/features":
            return httpx.Response(200, json={"features": {"portal": True}})
        if path == "/portal/billing/v1/rejectedEvents":
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"status": 404})

    client = client_for(gateway)
    page = await client.get(
        "/portal/rejected-events", headers=PORTAL_HEADERS, params={"metric_code": "api_calls"}
    )
    assert page.status_code == 200, page.text
    [feed] = [r for r in asked if r.url.path.endswith("/rejectedEvents")]
    # The org comes from the token at the gateway: the console never names one.
    assert dict(feed.url.params) == {"metricCode": "api_calls", "pageSize": "50"}
    assert "every event sent counted" in page.text
    assert 'data-nav="rejected-events"' in page.text

    # A staff token has no portal feed.
    staff = await client.get("/portal/rejected-events", headers=ADMIN_HEADERS)
    assert staff.status_code == 403
