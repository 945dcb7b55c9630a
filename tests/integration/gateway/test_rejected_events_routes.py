"""The rejection feed through the gateway: the admin route names the org, the
portal route takes it from the token, and one org never sees another's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.gateway import (
    admin_headers,
    gateway_over_services,
    portal_headers,
    service_headers,
)

pytestmark = pytest.mark.integration

ADMIN = "/super-admin/billing/v1"
PORTAL = "/portal/billing/v1"
INTERNAL = "/internal/billing/v1"


@pytest.fixture(scope="module")
async def http(database_url: str, nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_over_services(database_url, nats_url) as client:
        yield client


async def _reject(http: httpx.AsyncClient, org: str, keys: list[str]) -> None:
    events = [{"orgId": org, "metricCode": "no_such_metric", "idempotencyKey": k} for k in keys]
    # Retried while the services warm up on a loaded machine (a 503 or 504 from
    # the gateway's deadline): safe, as the feed keeps a retried rejection once.
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        r = await http.post(
            f"{INTERNAL}/usage/events:batchRecord",
            json={"events": events},
            headers=service_headers(),
        )
        if r.status_code not in (503, 504) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert r.status_code == 200, r.text
    assert {x["reason"] for x in r.json()["results"]} == {"USAGE_REJECTION_REASON_UNKNOWN_METRIC"}


def _keys(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [x["idempotencyKey"] for x in response.json().get("rejectedEvents", [])]


async def test_admin_and_portal_routes_list_an_orgs_own_rejections(
    http: httpx.AsyncClient,
) -> None:
    org_a, org_b = f"org_a_{uuid.uuid4().hex[:6]}", f"org_b_{uuid.uuid4().hex[:6]}"
    await _reject(http, org_a, ["a1", "a2", "a3"])
    await _reject(http, org_b, ["b1"])

    admin = admin_headers(role="billing_support")
    listed = await http.get(f"{ADMIN}/orgs/{org_a}/rejectedEvents", headers=admin)
    assert _keys(listed) == ["a3", "a2", "a1"]
    row = listed.json()["rejectedEvents"][0]
    assert row["orgId"] == org_a and row["metricCode"] == "no_such_metric"
    assert row["reason"] == "USAGE_REJECTION_REASON_UNKNOWN_METRIC"

    page = await http.get(
        f"{ADMIN}/orgs/{org_a}/rejectedEvents",
        params={"pageSize": 2, "reason": "USAGE_REJECTION_REASON_UNKNOWN_METRIC"},
        headers=admin,
    )
    assert _keys(page) == ["a3", "a2"]
    rest = await http.get(
        f"{ADMIN}/orgs/{org_a}/rejectedEvents",
        params={
            "pageSize": 2,
            "reason": "USAGE_REJECTION_REASON_UNKNOWN_METRIC",
            "pageToken": page.json()["nextPageToken"],
        },
        headers=admin,
    )
    assert _keys(rest) == ["a1"]

    assert _keys(await http.get(f"{PORTAL}/rejectedEvents", headers=portal_headers(org_a))) == [
        "a3",
        "a2",
        "a1",
    ]
    mine = await http.get(f"{PORTAL}/rejectedEvents", headers=portal_headers(org_b))
    assert _keys(mine) == ["b1"]
    assert org_a not in mine.text

    # Org B naming org A is refused, never answered with org A's rows.
    forged = await http.get(
        f"{PORTAL}/rejectedEvents", params={"orgId": org_a}, headers=portal_headers(org_b)
    )
    assert forged.status_code == 404, forged.text
    assert "a1" not in forged.text and org_a not in forged.text

    # Without a token there is nothing; a bad token is a problem document.
    assert (await http.get(f"{PORTAL}/rejectedEvents")).status_code == 401
    bad = await http.get(
        f"{ADMIN}/orgs/{org_a}/rejectedEvents", params={"pageToken": "junk"}, headers=admin
    )
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_a_dialects_rejection_lands_in_the_feed(http: httpx.AsyncClient) -> None:
    """Lago's route goes through RecordUsageBatch: its rejections are kept too."""
    org = f"org_lago_{uuid.uuid4().hex[:6]}"
    created = await http.post(
        f"{ADMIN}/orgs/{org}/apiKeys", json={"name": "feed"}, headers=admin_headers()
    )
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    sent = await http.post(
        "/api/v1/events",
        json={
            "event": {
                "transaction_id": "lago-unknown",
                "external_customer_id": org,
                "code": "no_such_metric",
                "timestamp": 1764700000,
            }
        },
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert sent.status_code == 422, sent.text
    listed = await http.get(f"{PORTAL}/rejectedEvents", headers=portal_headers(org))
    assert _keys(listed) == ["lago-unknown"]
    assert listed.json()["rejectedEvents"][0]["reason"] == "USAGE_REJECTION_REASON_UNKNOWN_METRIC"


async def test_an_unparseable_time_over_http_is_a_malformed_body(http: httpx.AsyncClient) -> None:
    org = f"org_t_{uuid.uuid4().hex[:6]}"
    events = [
        {"orgId": org, "metricCode": "api_calls", "idempotencyKey": "t1"},
        {"orgId": org, "metricCode": "api_calls", "idempotencyKey": "t2", "eventTime": "soon"},
    ]
    r = await http.post(
        f"{INTERNAL}/usage/events:batchRecord", json={"events": events}, headers=service_headers()
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [v["field"] for v in r.json()["violations"]] == ["events.eventTime"]
    assert "events[1].eventTime" in r.json()["detail"]
    listed = await http.get(f"{PORTAL}/rejectedEvents", headers=portal_headers(org))
    assert _keys(listed) == []
