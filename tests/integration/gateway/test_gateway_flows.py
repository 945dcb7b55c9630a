"""The gateway in front of the real catalog, subscriptions and usage services.

Admin builds and publishes a package over HTTP, a portal user subscribes, a
product service records usage and checks an entitlement; errors come back as
problem documents; a portal token of one org reaches nothing of another
through any portal route; every mutation lands in its service's audit trail,
read back through the gateway.
Invoicing and payments are pointed at a port nobody listens on (503).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway.descriptors import http_bindings
from gateway.openapi import openapi_path
from tests.support.gateway import (
    RUNNING_SERVICES,
    admin_headers,
    gateway_over_services,
    portal_headers,
    service_headers,
)

pytestmark = pytest.mark.integration

ADMIN = "/super-admin/billing/v1"
PORTAL = "/portal/billing/v1"
INTERNAL = "/internal/billing/v1"


async def eventually(
    attempt: Callable[[], Awaitable[httpx.Response]],
    ok: Callable[[httpx.Response], bool],
    seconds: float = 20,
) -> httpx.Response:
    """Projections follow events a moment later: retry until the answer is the one wanted."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await attempt()
        if ok(response):
            return response
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"not reached in {seconds}s: {response.status_code} {response.text}"
            )
        await asyncio.sleep(0.2)


class World:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.org_a = f"org_a_{uuid.uuid4().hex[:6]}"
        self.org_b = f"org_b_{uuid.uuid4().hex[:6]}"
        self.ids: dict[str, str] = {}


@pytest.fixture(scope="module")
async def world(database_url: str, nats_url: str) -> AsyncIterator[World]:
    async with gateway_over_services(database_url, nats_url) as client:
        yield World(client)


async def test_money_path_through_the_gateway(world: World) -> None:
    http = world.client
    admin = admin_headers()

    metric = await http.post(
        f"{ADMIN}/metrics",
        json={
            "metric": {"code": "api_calls", "name": "API calls", "aggregation": "AGGREGATION_COUNT"}
        },
        headers=admin,
    )
    assert metric.status_code == 200, metric.text
    metric_id = metric.json()["metric"]["metricId"]

    # Nested path variable: {metric.metric_id}
    renamed = await http.patch(
        f"{ADMIN}/metrics/{metric_id}",
        json={"metric": {"name": "API requests"}, "updateMask": "name"},
        headers=admin,
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["metric"]["name"] == "API requests"

    draft = {
        "name": "Starter",
        "currencyCode": "USD",
        "billingInterval": "BILLING_INTERVAL_MONTHLY",
        "baseFeeAmount": "10.00",
        "baseFeeTiming": "BASE_FEE_TIMING_IN_ADVANCE",
        "trialDays": 0,
        "charges": [{"metricId": metric_id, "standard": {"unitAmount": "0.001"}}],
        "featureLimits": [
            {
                "featureKey": "api_calls",
                "limit": "3",
                "enforcement": "LIMIT_ENFORCEMENT_HARD",
                "resetsEachPeriod": True,
                "metricCode": "api_calls",
            }
        ],
    }
    package = await http.post(
        f"{ADMIN}/packages", json={"code": "starter", "draft": draft}, headers=admin
    )
    assert package.status_code == 200, package.text
    package_id = package.json()["package"]["packageId"]
    published = await http.post(f"{ADMIN}/packages/{package_id}:publish", json={}, headers=admin)
    assert published.status_code == 200, published.text
    world.ids["package_id"] = package_id

    # Portal: the org reads the catalog and subscribes; the org comes from the token.
    portal_a = portal_headers(world.org_a)
    listed = await http.get(f"{PORTAL}/packages", headers=portal_a)
    assert listed.status_code == 200, listed.text
    assert package_id in listed.text
    one = await http.get(f"{PORTAL}/packages/{package_id}", headers=portal_a)
    assert one.status_code == 200, one.text
    version_id = one.json()["package"].get("currentVersion", {}).get("packageVersionId") or ""
    if not version_id:
        version_id = re.search(r'"packageVersionId":\s*"([^"]+)"', one.text).group(1)  # type: ignore[union-attr]
    world.ids["package_version_id"] = version_id

    created = await eventually(
        lambda: http.post(
            f"{PORTAL}/subscriptions",
            json={"packageId": package_id, "requestId": f"sub-{world.org_a}"},
            headers=portal_a,
        ),
        lambda r: r.status_code == 200,
    )
    subscription = created.json()["subscription"]
    assert subscription["orgId"] == world.org_a
    world.ids["subscription_id"] = subscription["subscriptionId"]

    mine = await http.get(f"{PORTAL}/subscriptions", headers=portal_a)
    assert mine.status_code == 200
    assert world.ids["subscription_id"] in mine.text

    # Internal: a product service records usage and asks for the entitlement.
    service = service_headers()
    events = [
        {"orgId": world.org_a, "metricCode": "api_calls", "idempotencyKey": f"call-{i}"}
        for i in (1, 2, 3)
    ]
    recorded = await eventually(
        lambda: http.post(
            f"{INTERNAL}/usage/events:batchRecord", json={"events": events}, headers=service
        ),
        lambda r: (
            r.status_code == 200
            and all(x.get("status") != "USAGE_EVENT_STATUS_REJECTED" for x in r.json()["results"])
        ),
    )
    assert len(recorded.json()["results"]) == 3

    # The static key works as well as a service token.
    single = await http.post(
        f"{INTERNAL}/usage/events",
        json={"event": events[0]},
        headers={"X-Api-Key": "test-internal-key"},
    )
    assert single.status_code == 200, single.text

    check = await eventually(
        lambda: http.post(
            f"{INTERNAL}/entitlements:check",
            json={"orgId": world.org_a, "featureKey": "api_calls", "quantity": "1"},
            headers=service,
        ),
        lambda r: r.status_code == 200 and r.json().get("used") == "3",
    )
    assert check.json().get("allowed", False) is False

    # Portal usage chart for the period, org from the token.
    usage = await http.get(
        f"{PORTAL}/subscriptions/{world.ids['subscription_id']}/aggregates", headers=portal_a
    )
    assert usage.status_code == 200, usage.text

    # Streaming RPCs are not transcoded.
    stream = await http.post(f"{INTERNAL}/usage/events:stream", json={}, headers=service)
    assert stream.status_code == 501
    assert stream.headers["content-type"].startswith("application/problem+json")


async def test_portal_cannot_set_staff_only_fields(world: World) -> None:
    """A customer cannot give itself a trial, backdate or double-subscribe; staff can."""
    http = world.client
    if "package_id" not in world.ids:
        pytest.skip("needs the money path to have run first")
    org_c = f"org_c_{uuid.uuid4().hex[:6]}"
    portal_c = portal_headers(org_c)
    package_id = world.ids["package_id"]
    for extra, field in (
        ({"trialDays": 30}, "trial_days"),
        ({"startTime": "2020-01-01T00:00:00Z"}, "start_time"),
        ({"allowMultiple": True}, "allow_multiple"),
    ):
        r = await http.post(
            f"{PORTAL}/subscriptions",
            json={"packageId": package_id, "requestId": f"staff-{field}-{org_c}", **extra},
            headers=portal_c,
        )
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["reason"] == "STAFF_ONLY_FIELD"
        assert [v["field"] for v in r.json()["violations"]] == [field]

    # Nothing was created for the org.
    admin = admin_headers()
    listed = await http.get(f"{ADMIN}/orgs/{org_c}/subscriptions", headers=admin)
    assert listed.status_code == 200, listed.text
    assert listed.json().get("subscriptions", []) == []

    # The admin route of the same RPC takes the field.
    staff = await http.post(
        f"{ADMIN}/orgs/{org_c}/subscriptions",
        json={"packageId": package_id, "trialDays": 14, "requestId": f"staff-ok-{org_c}"},
        headers=admin,
    )
    assert staff.status_code == 200, staff.text
    assert staff.json()["subscription"]["state"] == "SUBSCRIPTION_STATE_TRIALING"


async def test_portal_overview(world: World) -> None:
    http = world.client
    if "subscription_id" not in world.ids:
        pytest.skip("needs the money path to have run first")
    mine = await http.get(f"{PORTAL}/overview", headers=portal_headers(world.org_a))
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["orgId"] == world.org_a
    assert body["subscription"]["subscriptionId"] == world.ids["subscription_id"]
    assert isinstance(body["usage"], list)
    # Invoicing is not running here: that part is named, the rest still answers.
    assert body["upcomingInvoice"] is None
    assert [p["part"] for p in body["unavailable"]] == ["upcomingInvoice"]
    assert body["unavailable"][0]["status"] == 503

    theirs = await http.get(f"{PORTAL}/overview", headers=portal_headers(world.org_b))
    assert theirs.status_code == 200
    assert theirs.json()["subscription"] is None
    assert world.ids["subscription_id"] not in theirs.text
    assert (await http.get(f"{PORTAL}/overview")).status_code == 401


def _cloudevent(world: World, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"ce-{world.org_a}-{n}",
        "source": "//product-api/calls",
        "type": "api_calls",
        "subject": world.org_a,
        # Full precision: truncated to the second it could precede the subscription's start.
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **extra,
    }


async def test_cloudevents_usage_ingestion(world: World) -> None:
    """CloudEvents JSON through the real usage service: mapped, deduplicated, 400s named."""
    http = world.client
    if "subscription_id" not in world.ids:
        pytest.skip("needs the money path to have run first")
    service = service_headers()
    aggregate_url = f"{INTERNAL}/subscriptions/{world.ids['subscription_id']}/aggregates/api_calls"
    before = await http.get(aggregate_url, headers=service)
    assert before.status_code == 200, before.text
    counted = int(before.json()["aggregate"].get("eventCount", "0"))

    batch_headers = {**service, "content-type": "application/cloudevents-batch+json"}
    single_headers = {**service, "content-type": "application/cloudevents+json"}
    batch = [
        _cloudevent(world, 1),
        _cloudevent(world, 2, data={"value": 1, "properties": {"route": "/v1/things"}}),
        _cloudevent(world, 1),  # the same id again: counted once
    ]
    # Rejected events are not stored, so retrying until the projections caught up is safe.
    r = await eventually(
        lambda: http.post(
            f"{INTERNAL}/usage/events:batchRecord",
            content=json.dumps(batch),
            headers=batch_headers,
        ),
        lambda r: r.status_code == 200 and "REJECTED" not in r.text,
    )
    statuses = [x["status"] for x in r.json()["results"]]
    assert statuses[:2] == ["USAGE_EVENT_STATUS_ACCEPTED"] * 2, r.text
    assert statuses[2] == "USAGE_EVENT_STATUS_DUPLICATE", r.text
    assert [x["idempotencyKey"] for x in r.json()["results"]] == [e["id"] for e in batch]

    # Single event; org from the orgid extension, metric from data.metric.
    again = _cloudevent(world, 2, type="com.example.usage", data={"metric": "api_calls"})
    del again["subject"]
    again["orgid"] = world.org_a
    r = await http.post(
        f"{INTERNAL}/usage/events", content=json.dumps(again), headers=single_headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"]["status"] == "USAGE_EVENT_STATUS_DUPLICATE"
    fresh = _cloudevent(world, 3, subscriptionid=world.ids["subscription_id"])
    r = await http.post(
        f"{INTERNAL}/usage/events", content=json.dumps(fresh), headers=single_headers
    )
    assert r.json()["result"]["status"] == "USAGE_EVENT_STATUS_ACCEPTED", r.text

    # Three distinct ids sent five times: the aggregate counts three.
    await eventually(
        lambda: http.get(aggregate_url, headers=service),
        lambda r: int(r.json()["aggregate"].get("eventCount", "0")) == counted + 3,
    )

    # Malformed events: 400 naming the CloudEvents attribute.
    for url, headers, body, field in (
        (f"{INTERNAL}/usage/events", single_headers, _cloudevent(world, 9, time="soon"), "time"),
        (f"{INTERNAL}/usage/events", single_headers, {"specversion": "0.3"}, "specversion"),
        (
            f"{INTERNAL}/usage/events",
            single_headers,
            _cloudevent(world, 9, data={"value": True}),
            "data.value",
        ),
        (
            f"{INTERNAL}/usage/events:batchRecord",
            batch_headers,
            [_cloudevent(world, 9), {**_cloudevent(world, 10), "id": ""}],
            "[1].id",
        ),
        (
            f"{INTERNAL}/usage/events:batchRecord",
            batch_headers,
            [{k: v for k, v in _cloudevent(world, 9).items() if k != "subject"}],
            "[0].subject",
        ),
    ):
        r = await http.post(url, content=json.dumps(body), headers=headers)
        assert r.status_code == 400, (body, r.text)
        assert [v["field"] for v in r.json()["violations"]] == [field], r.text
    # One event where a batch is expected (and any other route): 415.
    wrong = await http.post(
        f"{INTERNAL}/usage/events:batchRecord",
        content=json.dumps(_cloudevent(world, 9)),
        headers=single_headers,
    )
    assert wrong.status_code == 415, wrong.text
    other = await http.post(
        f"{INTERNAL}/entitlements:check", content=json.dumps({}), headers=single_headers
    )
    assert other.status_code == 415, other.text


async def test_support_context(world: World) -> None:
    """Admin and support read one org's whole billing context; absent services are named."""
    http = world.client
    if "subscription_id" not in world.ids:
        pytest.skip("needs the money path to have run first")
    for role in ("billing_admin", "billing_support"):
        r = await http.get(f"{ADMIN}/orgs/{world.org_a}/context", headers=admin_headers(role=role))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["orgId"] == world.org_a
        assert world.ids["subscription_id"] in [s["subscriptionId"] for s in body["subscriptions"]]
        assert body["currentSubscription"]["subscriptionId"] == world.ids["subscription_id"]
        assert {a["metricCode"] for a in body["usage"]} >= {"api_calls"}
        # Invoicing and payments do not run here: null, and named with their status.
        assert body["invoices"] is None and body["creditBalance"] is None
        assert body["paymentMethods"] is None
        assert [(p["part"], p["status"]) for p in body["unavailable"]] == [
            ("creditBalance", 503),
            ("invoices", 503),
            ("paymentMethods", 503),
        ]

    other = await http.get(f"{ADMIN}/orgs/{world.org_b}/context", headers=admin_headers())
    assert other.status_code == 200, other.text
    assert other.json()["subscriptions"] == [] and other.json()["currentSubscription"] is None
    assert other.json()["usage"] is None
    assert world.ids["subscription_id"] not in other.text
    odd = await http.get(f"{ADMIN}/orgs/a%3Fb%23c/context", headers=admin_headers())
    assert odd.status_code == 200, odd.text
    assert odd.json()["orgId"] == "a?b#c"

    path = f"{ADMIN}/orgs/{world.org_a}/context"
    assert (await http.get(path, headers=portal_headers(world.org_a))).status_code == 403
    assert (await http.get(path)).status_code == 401


async def test_errors_are_problem_documents(world: World) -> None:
    http = world.client
    admin = admin_headers()

    # A service's INVALID_ARGUMENT with field violations.
    bad = await http.post(
        f"{ADMIN}/metrics",
        json={"metric": {"code": "Not A Code!", "aggregation": "AGGREGATION_SUM"}},
        headers=admin,
    )
    assert bad.status_code == 400, bad.text
    assert bad.headers["content-type"].startswith("application/problem+json")
    body = bad.json()
    assert {"type", "title", "status", "detail", "reason"} <= set(body)
    assert body["violations"] and all(
        {"field", "description"} <= set(v) for v in body["violations"]
    )

    missing = await http.get(f"{ADMIN}/metrics/met_does_not_exist", headers=admin)
    assert missing.status_code == 404, missing.text
    assert missing.json()["status"] == 404

    # Malformed JSON, unknown field, wrong type: 400 naming the field, never 500.
    for content, field in (
        (b"{not json", "body"),
        (json.dumps({"metric": {"code": "x", "bogus": 1}}).encode(), "metric.bogus"),
        (json.dumps({"metric": {"code": 5}}).encode(), "metric.code"),
        (json.dumps({"metric": {"aggregation": "NOT_AN_ENUM"}}).encode(), "metric.aggregation"),
        (json.dumps(["a list"]).encode(), "body"),
    ):
        r = await http.post(
            f"{ADMIN}/metrics",
            content=content,
            headers={**admin, "content-type": "application/json"},
        )
        assert r.status_code == 400, (content, r.text)
        assert [v["field"] for v in r.json()["violations"]] == [field]
    # The usage routes' own codec declines what json_format refuses, so the
    # generic problem is answered there too.
    service = service_headers()
    for content, field in (
        (b'{"events": [{"orgId": "o", "bogus": 1}]}', "events.bogus"),
        (b'{"events": [{"orgId": 5}]}', "events.orgId"),
        (b'{"events": [{"eventTime": "soon"}]}', "events.eventTime"),
        (b'{"events": [{"idempotencyKey": "a\\u0000"}]}', "events.idempotency_key"),
        (b'{"events": {}}', "events"),
        (b'{"\\ud800": 1}', "body"),
    ):
        r = await http.post(
            f"{INTERNAL}/usage/events:batchRecord",
            content=content,
            headers={**service, "content-type": "application/json"},
        )
        assert r.status_code == 400, (content, r.text)
        assert [v["field"] for v in r.json()["violations"]] == [field], r.text
    r = await http.get(f"{ADMIN}/metrics?pageSize=lots", headers=admin)
    assert r.status_code == 400
    assert r.json()["violations"][0]["field"] == "page_size"

    # A service nobody runs yet: 503, not a hang and not a 500.
    down = await http.get(f"{ADMIN}/invoices", headers=admin)
    assert down.status_code == 503, down.text

    # Request ids: accepted and returned, or generated.
    given = await http.get(f"{ADMIN}/metrics", headers={**admin, "X-Request-Id": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    made = await http.get(f"{ADMIN}/metrics", headers=admin)
    assert len(made.headers["x-request-id"]) == 32

    # Unknown route and wrong method.
    assert (await http.get(f"{ADMIN}/nothing", headers=admin)).status_code == 404
    assert (await http.delete(f"{ADMIN}/metrics", headers=admin)).status_code == 405


def _example_path(template: str, ids: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1).split(".")[-1]
        return ids.get(name, f"{name}_of_org_a")

    return re.sub(r"\{([^}=]+)(?:=[^}]*)?\}", fill, template)


async def test_portal_tenant_isolation_on_every_route(world: World) -> None:
    """Org B's token, aimed at org A's data through every portal binding, gets nothing."""
    http = world.client
    if "subscription_id" not in world.ids:
        pytest.skip("needs the money path to have run first")
    portal_b = portal_headers(world.org_b)
    org_a_markers = [world.org_a, world.ids["subscription_id"]]
    portal = [b for b in http_bindings() if b.path.startswith(PORTAL)]
    assert len(portal) >= 20
    checked = 0
    for binding in portal:
        path = _example_path(binding.path, world.ids)
        method = binding.verb.upper()

        # 1. Naming org A explicitly (query or body) is refused as "not found".
        if binding.body:
            r = await http.request(method, path, json={"orgId": world.org_a}, headers=portal_b)
        else:
            r = await http.request(method, path, params={"orgId": world.org_a}, headers=portal_b)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        for marker in org_a_markers:
            assert marker not in r.text

        # 2. Org A's resource ids with org B's token: never org A's data, never a change.
        r = await http.request(
            method, path, **({"json": {}} if binding.body else {}), headers=portal_b
        )
        if r.status_code < 300:
            for marker in org_a_markers:
                assert marker not in r.text, (method, path, r.text)
        else:
            assert r.status_code in (400, 404, 409, 501, 503), (method, path, r.status_code, r.text)
        checked += 1
    assert checked == len(portal)

    # Org A's subscription is still there, unchanged by anything org B sent.
    admin = admin_headers(role="billing_support")
    after = await http.get(f"{ADMIN}/subscriptions/{world.ids['subscription_id']}", headers=admin)
    assert after.status_code == 200, after.text
    assert after.json()["subscription"]["orgId"] == world.org_a
    assert after.json()["subscription"].get("cancelAtPeriodEnd", False) is False
    assert after.json()["subscription"]["state"] in (
        "SUBSCRIPTION_STATE_ACTIVE",
        "SUBSCRIPTION_STATE_TRIALING",
    )


# The services running here; invoicing and payments are away (see RUNNING_SERVICES).
RUNNING = [("service", name) for name in RUNNING_SERVICES]


async def _audit(http: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    answer = await http.get(f"{ADMIN}/audit", params=[*RUNNING, *params.items()], headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_roles_and_audit_log(world: World) -> None:
    http = world.client
    support = admin_headers(role="billing_support", subject="support-1")
    admin = admin_headers(subject="finance-9")

    assert (await http.get(f"{ADMIN}/metrics", headers=support)).status_code == 200
    refused = await http.post(
        f"{ADMIN}/metrics",
        json={"metric": {"code": "seats", "name": "Seats", "aggregation": "AGGREGATION_COUNT"}},
        headers=support,
    )
    assert refused.status_code == 403
    # A portal token is no admin, and may not read the trail either.
    as_portal = await http.get(f"{ADMIN}/metrics", headers=portal_headers(world.org_a))
    assert as_portal.status_code == 403
    peek = await http.get(f"{ADMIN}/audit", params=RUNNING, headers=portal_headers(world.org_a))
    assert peek.status_code == 403

    made = await http.post(
        f"{ADMIN}/metrics",
        json={"metric": {"code": "seats", "name": "Seats", "aggregation": "AGGREGATION_COUNT"}},
        headers={**admin, "X-Request-Id": "audit-me-1"},
    )
    assert made.status_code == 200, made.text
    dup = await http.post(
        f"{ADMIN}/metrics",
        json={"metric": {"code": "seats", "name": "Seats", "aggregation": "AGGREGATION_COUNT"}},
        headers={**admin, "X-Request-Id": "audit-me-2"},
    )
    assert dup.status_code in (400, 409), dup.text

    entries = (await _audit(http, support, page_size=1000))["entries"]
    by_request = {e.get("requestId"): e for e in entries}
    ok = by_request["audit-me-1"]
    assert ok["actor"] == "finance-9"
    assert ok["actorRole"] == "billing_admin"
    assert ok["service"] == "catalog"
    assert ok["action"] == "tally.catalog.v1.CatalogService.CreateMetric"
    assert ok["target"] == made.json()["metric"]["metricId"]
    assert ok["outcome"] == "OK" and ok["statusCode"] == "OK"
    # Refused by the service: recorded with the reason the caller was given.
    assert by_request["audit-me-2"]["outcome"] == dup.json()["reason"]
    assert by_request["audit-me-2"]["statusCode"] != "OK"
    # Refused by the gateway (403): the service never saw it.
    assert not any(e["actor"] == "support-1" for e in entries)
    # Every mutation of this module, whatever its entry: admin's and the portal's.
    actions = {e["action"].rsplit(".", 1)[1] for e in entries}
    assert {"CreateMetric", "UpdateMetric", "CreatePackage", "PublishPackage"} <= actions
    subscribed = [e for e in entries if e.get("target") == world.ids.get("subscription_id")]
    if subscribed:  # the money path ran first and subscribed org A from the portal
        first = subscribed[-1]
        assert first["action"] == "tally.subscriptions.v1.SubscriptionsService.CreateSubscription"
        assert (first["actor"], first["actorRole"]) == (f"user@{world.org_a}", "portal")
        assert first["orgId"] == world.org_a

    filtered = (await _audit(http, support, actor="finance-9"))["entries"]
    assert filtered and {e["actor"] for e in filtered} == {"finance-9"}

    # The trail is incomplete without a service, so a page is refused, never partial.
    everything = await http.get(f"{ADMIN}/audit", headers=support)
    assert everything.status_code == 503, everything.text
    assert everything.json()["reason"] == "AUDIT_UNAVAILABLE"
    assert "invoicing" in everything.json()["detail"]
    bad = await http.get(f"{ADMIN}/audit", params={"service": "ledger"}, headers=support)
    assert bad.status_code == 400 and bad.json()["violations"][0]["field"] == "service"


def _newest_first(entries: list[dict[str, Any]]) -> bool:
    keys = [(datetime.fromisoformat(e["createTime"]), e["entryId"]) for e in entries]
    return keys == sorted(keys, reverse=True)


async def test_audit_pages_across_services(world: World) -> None:
    http = world.client
    actor = f"pager-{uuid.uuid4().hex[:8]}"
    org = f"org_p_{uuid.uuid4().hex[:6]}"
    admin = admin_headers(subject=actor)
    code = f"pg_{uuid.uuid4().hex[:8]}"

    async def send(rid: str, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return await http.request(
            method, f"{ADMIN}{path}", json=body, headers={**admin, "X-Request-Id": rid}
        )

    metric = await send(
        f"{actor}-1",
        "POST",
        "/metrics",
        {"metric": {"code": code, "name": "Pages", "aggregation": "AGGREGATION_COUNT"}},
    )
    assert metric.status_code == 200, metric.text
    metric_id = metric.json()["metric"]["metricId"]
    renamed = await send(
        f"{actor}-2",
        "PATCH",
        f"/metrics/{metric_id}",
        {"metric": {"name": "Paged"}, "updateMask": "name"},
    )
    assert renamed.status_code == 200, renamed.text
    archived = await send(f"{actor}-3", "POST", f"/metrics/{metric_id}:archive", {})
    assert archived.status_code == 200, archived.text
    # Two refusals in subscriptions, recorded there with the org they named.
    for n, verb in ((4, "cancel"), (5, "pause")):
        missing = await send(
            f"{actor}-{n}", "POST", f"/subscriptions/sub_missing_{n}:{verb}", {"orgId": org}
        )
        assert missing.status_code == 404, missing.text

    seen: list[dict[str, Any]] = []
    pages = 0
    token = ""
    while True:
        params: dict[str, Any] = {"actor": actor, "page_size": 2}
        if token:
            params["page_token"] = token
        page = await _audit(http, admin, **params)
        pages += 1
        assert len(page["entries"]) <= 2
        seen.extend(page["entries"])
        token = page.get("nextPageToken", "")
        if not token:
            break
        assert pages < 10, "the pages never end"
    assert pages == 3
    assert sorted(e["requestId"] for e in seen) == [f"{actor}-{n}" for n in range(1, 6)]
    assert len({e["entryId"] for e in seen}) == 5
    assert _newest_first(seen)
    assert {e["service"] for e in seen} == {"catalog", "subscriptions"}
    assert all(e["target"] == metric_id for e in seen if e["service"] == "catalog")

    by_org = (await _audit(http, admin, org_id=org))["entries"]
    assert sorted(e["requestId"] for e in by_org) == [f"{actor}-4", f"{actor}-5"]
    assert {e["statusCode"] for e in by_org} == {"NOT_FOUND"}
    assert all(e["outcome"] not in ("", "OK") for e in by_org)
    by_action = (await _audit(http, admin, actor=actor, action="UpdateMetric"))["entries"]
    assert [e["requestId"] for e in by_action] == [f"{actor}-2"]
    full = "tally.subscriptions.v1.SubscriptionsService.PauseSubscription"
    assert [e["requestId"] for e in (await _audit(http, admin, action=full))["entries"]] == [
        f"{actor}-5"
    ]
    # A token is bound to its filters.
    first = await _audit(http, admin, actor=actor, page_size=2)
    other = await http.get(
        f"{ADMIN}/audit",
        params=[*RUNNING, ("actor", "someone"), ("page_token", first["nextPageToken"])],
        headers=admin,
    )
    assert other.status_code == 400, other.text


async def test_openapi_lists_the_routes(world: World) -> None:
    doc = (await world.client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert "/portal/billing/v1/subscriptions" in paths
    assert {"get", "patch"} <= set(paths["/super-admin/billing/v1/metrics/{metric_id}"])
    assert "/internal/billing/v1/entitlements:check" in paths
    assert "/super-admin/billing/v1/audit" in paths
    assert "/webhooks/stripe" in paths
    assert "/portal/billing/v1/overview" in paths
    expected: set[tuple[str, str]] = {(openapi_path(b.path), b.verb) for b in http_bindings()}
    listed = {(p, verb) for p, ops in paths.items() for verb in ops}
    assert expected <= listed


def _junk(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "bigint", "float", "bool", "null", "list", "dict", "enum"]
    if depth > 2:
        kinds = kinds[:6]
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice(["", "x", "2026-01-01T00:00:00Z", "-1", "1e400", "\u0000", "é" * 50])
    if kind == "int":
        return rng.randint(-(2**31), 2**31)
    if kind == "bigint":
        return rng.choice([2**70, -(2**64)])
    if kind == "float":
        return rng.choice([0.5, -1.25, 1e308])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "null":
        return None
    if kind == "list":
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "enum":
        return rng.choice(["AGGREGATION_COUNT", "STATE_UNSPECIFIED", "NOPE"])
    return {rng.choice(["a", "code", "orgId"]): _junk(rng, depth + 1)}


def _fuzz_body(descriptor: Any, rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """Fields of the right names with values of random (often wrong) JSON types."""
    body: dict[str, Any] = {}
    for field in descriptor.fields:
        if rng.random() < 0.5:
            continue
        if field.message_type is not None and depth < 2 and rng.random() < 0.6:
            inner = _fuzz_body(field.message_type, rng, depth + 1)
            body[field.json_name] = [inner] if field.is_repeated else inner
        else:
            body[field.json_name] = _junk(rng)
    return body


async def test_fuzzed_requests_never_get_a_500(world: World) -> None:
    """A seeded fuzz of every route of the running services: bad input is 4xx, not 5xx."""
    http = world.client
    rng = random.Random(20261124)
    running = {"catalog", "subscriptions", "usage"}
    headers = {
        "portal": portal_headers(world.org_b),
        "admin": admin_headers(subject="fuzzer"),
        "internal": service_headers("fuzzer"),
    }
    sent = 0
    for binding in http_bindings():
        if binding.service not in running or binding.method.client_streaming:
            continue
        group = next(
            g
            for g, p in (("portal", PORTAL), ("admin", ADMIN), ("internal", INTERNAL))
            if binding.path.startswith(p)
        )
        for _ in range(6):
            path = _example_path(binding.path, {})
            kwargs: dict[str, Any] = {}
            if binding.body:
                kwargs["json"] = _fuzz_body(binding.method.input_type, rng)
            else:
                query = _fuzz_body(binding.method.input_type, rng)
                kwargs["params"] = {
                    k: json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                    for k, v in query.items()
                    if k != "orgId"
                }
            r = await http.request(binding.verb.upper(), path, headers=headers[group], **kwargs)
            assert r.status_code < 500, (binding.path, kwargs, r.status_code, r.text)
            sent += 1
    assert sent > 100
