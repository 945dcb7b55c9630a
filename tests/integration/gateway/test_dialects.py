"""Lago's, OpenMeter's and Stripe's usage APIs at the gateway, driven by their official SDKs.

The gateway is served by uvicorn on a free port (the SDKs bring their own HTTP
clients, called from a thread) over the real catalog, subscriptions and usage
services, PostgreSQL and NATS. Every check reads the aggregates back through
GetAggregate: a repeated call counts once, a key of org A never writes org B's
usage, a revoked or unknown key is a 401.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from corehttp.exceptions import ClientAuthenticationError, HttpResponseError
from lago_python_client.client import Client as LagoClient
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BatchEvent, Event
from openmeter import Client as OpenMeterClient
from openmeter.models import Event as OpenMeterEvent

from tests.support.gateway import (
    admin_headers,
    gateway_served_over_services,
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
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await attempt()
        if ok(response):
            return response
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached: {response.status_code} {response.text}")
        await asyncio.sleep(0.2)


@dataclass
class World:
    base_url: str
    http: httpx.AsyncClient
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    org_a: str = ""
    org_b: str = ""
    subscriptions: dict[str, str] = field(default_factory=dict)
    metric_ids: dict[str, str] = field(default_factory=dict)
    secret_a: str = ""

    @property
    def calls(self) -> str:
        return f"calls_{self.suffix}"

    @property
    def tokens(self) -> str:
        return f"tokens_{self.suffix}"

    async def aggregate(self, org: str, metric: str) -> tuple[int, str]:
        """(event count, value) of the org's current period for the metric."""
        r = await self.http.get(
            f"{INTERNAL}/subscriptions/{self.subscriptions[org]}/aggregates/{metric}",
            headers=service_headers(),
        )
        assert r.status_code == 200, r.text
        aggregate = r.json()["aggregate"]
        return int(aggregate.get("eventCount", "0")), aggregate.get("value", "0")

    async def settled(self, org: str, metric: str, count: int) -> str:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            got, value = await self.aggregate(org, metric)
            if got == count:
                return value
            assert asyncio.get_running_loop().time() < deadline, (got, count)
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def world(database_url: str, nats_url: str) -> AsyncIterator[World]:
    async with (
        gateway_served_over_services(database_url, nats_url) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        world = World(base_url, http)
        world.org_a = f"org_a_{world.suffix}"
        world.org_b = f"org_b_{world.suffix}"
        await _catalog_and_subscriptions(world)
        created = await http.post(
            f"{ADMIN}/orgs/{world.org_a}/apiKeys",
            json={"name": "lago sdk"},
            headers=admin_headers(),
        )
        assert created.status_code == 200, created.text
        world.secret_a = created.json()["secret"]
        yield world


async def _catalog_and_subscriptions(world: World) -> None:
    http, admin = world.http, admin_headers()
    metric_ids = []
    for metric in (
        {"code": world.calls, "name": "Calls", "aggregation": "AGGREGATION_COUNT"},
        {
            "code": world.tokens,
            "name": "Tokens",
            "aggregation": "AGGREGATION_SUM",
            "propertyKey": "tokens",
        },
    ):
        r = await http.post(f"{ADMIN}/metrics", json={"metric": metric}, headers=admin)
        assert r.status_code == 200, r.text
        metric_ids.append(r.json()["metric"]["metricId"])
        world.metric_ids[metric["code"]] = metric_ids[-1]
    draft = {
        "name": "Dialects",
        "currencyCode": "USD",
        "billingInterval": "BILLING_INTERVAL_MONTHLY",
        "baseFeeAmount": "0",
        "baseFeeTiming": "BASE_FEE_TIMING_IN_ADVANCE",
        "trialDays": 0,
        "charges": [{"metricId": m, "standard": {"unitAmount": "0.001"}} for m in metric_ids],
    }
    r = await http.post(
        f"{ADMIN}/packages",
        json={"code": f"dialects_{world.suffix}", "draft": draft},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    package_id = r.json()["package"]["packageId"]
    r = await http.post(f"{ADMIN}/packages/{package_id}:publish", json={}, headers=admin)
    assert r.status_code == 200, r.text
    for org in (world.org_a, world.org_b):
        created = await eventually(
            lambda org=org: http.post(  # type: ignore[misc]
                f"{PORTAL}/subscriptions",
                json={"packageId": package_id, "requestId": f"sub-{org}"},
                headers=portal_headers(org),
            ),
            lambda r: r.status_code == 200,
        )
        world.subscriptions[org] = created.json()["subscription"]["subscriptionId"]
    # The usage service learns metrics and subscriptions from events: wait until
    # an event of each org counts (sent through the internal route, then
    # accounted for by the tests below, which read counts relative to it).
    for org in (world.org_a, world.org_b):
        await eventually(
            lambda org=org: http.post(  # type: ignore[misc]
                f"{INTERNAL}/usage/events:batchRecord",
                json={
                    "events": [
                        {"orgId": org, "metricCode": m, "idempotencyKey": f"warm-{m}", "value": "1"}
                        for m in (world.calls, world.tokens)
                    ]
                },
                headers=service_headers(),
            ),
            lambda r: r.status_code == 200 and "REJECTED" not in r.text,
        )


def _lago(world: World, secret: str | None = None) -> LagoClient:
    return LagoClient(api_key=secret or world.secret_a, api_url=world.base_url)


async def test_lago_sdk_events_count_once_for_the_key_org(world: World) -> None:
    before = (await world.aggregate(world.org_a, world.calls))[0]
    tokens_before = (await world.aggregate(world.org_a, world.tokens))[0]
    now = datetime.now(UTC)
    event = Event(
        transaction_id=f"lago-1-{world.suffix}",
        external_subscription_id=world.subscriptions[world.org_a],
        code=world.calls,
        timestamp=now.timestamp(),  # fractional seconds, as Lago allows
        properties={"region": "eu"},
    )
    answer = await asyncio.to_thread(_lago(world).events.create, event)
    assert answer is not None
    assert answer.transaction_id == event.transaction_id
    assert answer.code == world.calls
    assert answer.lago_id
    # The same transaction again: the same answer, counted once.
    again = await asyncio.to_thread(_lago(world).events.create, event)
    assert again is not None and again.lago_id == answer.lago_id
    await world.settled(world.org_a, world.calls, before + 1)

    # A batch, with the value in the metric's property (Lago's field_name).
    batch = BatchEvent(
        events=[
            Event(
                transaction_id=f"lago-batch-{i}-{world.suffix}",
                external_subscription_id=world.subscriptions[world.org_a],
                code=world.tokens,
                timestamp=str(now.timestamp()),
                properties={"tokens": 10 * (i + 1)},
            )
            for i in range(3)
        ]
    )
    await asyncio.to_thread(_lago(world).events.batch_create, batch)
    await asyncio.to_thread(_lago(world).events.batch_create, batch)  # a retry counts once
    value = await world.settled(world.org_a, world.tokens, tokens_before + 3)
    # The warm-up event counted 1; the batch 10 + 20 + 30.
    assert value == "61"


async def test_lago_sdk_names_by_external_subscription_id_and_metric_alias(world: World) -> None:
    """Lago's ids unchanged: the subscription by the org's external id for it,
    the metric by an alias (OpenMeter's subject and type, Stripe's customer and
    event name too); an unknown
    external id is Lago's 422."""
    http, admin = world.http, admin_headers()
    org, external, alias = (
        f"org_c_{world.suffix}",
        f"lago-sub-{world.suffix}",
        f"Lago Calls {world.suffix}",
    )
    r = await http.patch(
        f"{ADMIN}/metrics/{world.metric_ids[world.calls]}",
        json={"metric": {"aliases": [alias]}, "updateMask": "aliases"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["metric"]["aliases"] == [alias]
    r = await http.get(f"{PORTAL}/subscriptions", headers=portal_headers(world.org_a))
    package_id = r.json()["subscriptions"][0]["packageId"]
    created = await http.post(
        f"{PORTAL}/subscriptions",
        json={"packageId": package_id, "externalId": external, "requestId": f"sub-{org}"},
        headers=portal_headers(org),
    )
    assert created.status_code == 200, created.text
    assert created.json()["subscription"]["externalId"] == external
    world.subscriptions[org] = created.json()["subscription"]["subscriptionId"]
    key = await http.post(f"{ADMIN}/orgs/{org}/apiKeys", json={"name": "c"}, headers=admin)
    assert key.status_code == 200, key.text
    secret = key.json()["secret"]

    # Until usage has learnt the alias and the subscription the event is
    # rejected, and a rejected event is not stored: sending again is safe.
    first = {"transaction_id": f"ext-0-{world.suffix}", "external_subscription_id": external}
    await eventually(
        lambda: http.post(
            "/api/v1/events",
            json={"event": {**first, "code": alias}},
            headers={"Authorization": f"Bearer {secret}"},
        ),
        lambda r: r.status_code == 200,
    )
    event = Event(
        transaction_id=f"ext-1-{world.suffix}",
        external_subscription_id=external,
        code=alias,
        timestamp=datetime.now(UTC).timestamp(),
    )
    answer = await asyncio.to_thread(_lago(world, secret).events.create, event)
    assert answer is not None and answer.external_subscription_id == external
    await asyncio.to_thread(_lago(world, secret).events.create, event)  # a retry counts once
    assert await world.settled(org, world.calls, 2) == "2"
    # OpenMeter's subject names the subscription the same way, its type an alias.
    by_subject = OpenMeterEvent(
        id=f"ext-om-{world.suffix}",
        source="my-app",
        specversion="1.0",
        type=alias,
        subject=external,
    )
    await asyncio.to_thread(_openmeter(world, secret).events.ingest_event, by_subject)
    assert await world.settled(org, world.calls, 3) == "3"
    # Stripe's customer too.
    await asyncio.to_thread(
        _stripe(world, secret).v1.billing.meter_events.create,
        {
            "event_name": alias,
            "identifier": f"ext-st-{world.suffix}",
            "payload": {"stripe_customer_id": external},
        },
    )
    assert await world.settled(org, world.calls, 4) == "4"

    unknown = Event(
        transaction_id=f"ext-2-{world.suffix}",
        external_subscription_id=f"nobody-{world.suffix}",
        code=alias,
    )
    with pytest.raises(LagoApiError) as refused:
        await asyncio.to_thread(_lago(world, secret).events.create, unknown)
    assert refused.value.status_code == 422
    feed = await http.get(f"{ADMIN}/orgs/{org}/rejectedEvents", headers=admin)
    assert feed.status_code == 200, feed.text
    reasons = {e["idempotencyKey"]: e["reason"] for e in feed.json()["rejectedEvents"]}
    assert reasons[unknown.transaction_id] == "USAGE_REJECTION_REASON_UNKNOWN_SUBSCRIPTION"
    assert (await world.aggregate(org, world.calls))[0] == 4


async def test_lago_rejections_and_bad_input_in_lagos_error_shape(world: World) -> None:
    http = world.http
    auth = {"Authorization": f"Bearer {world.secret_a}"}
    unknown = Event(
        transaction_id=f"lago-unknown-{world.suffix}",
        external_subscription_id=world.subscriptions[world.org_a],
        code="no_such_metric",
        timestamp=None,
        properties=None,
    )
    with pytest.raises(LagoApiError) as refused:
        await asyncio.to_thread(_lago(world).events.create, unknown)
    assert refused.value.status_code == 422
    r = await http.post("/api/v1/events", json={"event": unknown.dict()}, headers=auth)
    assert r.status_code == 422
    assert r.json() == {
        "status": 422,
        "error": "Unprocessable Entity",
        "code": "validation_errors",
        "error_details": {"code": [r.json()["error_details"]["code"][0]]},
    }
    assert r.json()["error_details"]["code"][0].startswith("unknown_metric")

    # A field missing and a bad timestamp: every problem named, nothing stored.
    r = await http.post(
        "/api/v1/events/batch",
        json={
            "events": [
                {"code": world.calls},
                {"transaction_id": "x", "code": "c", "timestamp": "soon"},
            ]
        },
        headers=auth,
    )
    assert r.status_code == 422, r.text
    assert r.json()["error_details"] == {
        "0": {"transaction_id": ["value_is_mandatory"]},
        "1": {"timestamp": ["invalid_format"]},
    }
    r = await http.post(
        "/api/v1/events", content=b"{not json", headers={**auth, "content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text
    # Oversize: refused whole, saying so.
    many = [{"transaction_id": f"big-{i}", "code": world.calls} for i in range(1001)]
    r = await http.post("/api/v1/events/batch", json={"events": many}, headers=auth)
    assert r.status_code == 422
    assert "at most 1000" in r.json()["error_details"]["events"][0]
    r = await http.get(
        f"{ADMIN}/orgs/{world.org_a}/usage/events",
        params={"idempotencyKey": "big-0"},
        headers=admin_headers(),
    )
    assert r.status_code == 200 and r.json().get("events", []) == [], r.text


async def test_a_key_of_org_a_never_writes_org_b(world: World) -> None:
    auth = {"Authorization": f"Bearer {world.secret_a}"}
    b_before = (await world.aggregate(world.org_b, world.calls))[0]
    a_before = (await world.aggregate(world.org_a, world.calls))[0]
    # Lago: org B named as the customer is refused; B's subscription is not A's.
    r = await world.http.post(
        "/api/v1/events",
        json={
            "event": {
                "transaction_id": f"steal-1-{world.suffix}",
                "external_customer_id": world.org_b,
                "code": world.calls,
            }
        },
        headers=auth,
    )
    assert r.status_code == 422
    assert r.json()["error_details"] == {"external_customer_id": ["customer_not_found"]}
    r = await world.http.post(
        "/api/v1/events",
        json={
            "event": {
                "transaction_id": f"steal-2-{world.suffix}",
                "external_subscription_id": world.subscriptions[world.org_b],
                "code": world.calls,
            }
        },
        headers=auth,
    )
    assert r.status_code == 422
    assert r.json()["error_details"]["external_subscription_id"][0].startswith(
        "unknown_subscription"
    )
    # OpenMeter: org B as the subject names no subscription of org A.
    r = await world.http.post(
        "/api/v1/events",
        content=json.dumps(
            {
                "specversion": "1.0",
                "id": "steal-3",
                "source": "test",
                "type": world.calls,
                "subject": world.org_b,
            }
        ),
        headers={**auth, "content-type": "application/cloudevents+json"},
    )
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    [violation] = r.json()["violations"]
    assert violation["description"].startswith("unknown_subscription"), violation
    # Whatever was tried, org B got nothing and org A nothing either.
    await asyncio.sleep(0.5)
    assert (await world.aggregate(world.org_b, world.calls))[0] == b_before
    assert (await world.aggregate(world.org_a, world.calls))[0] == a_before


def _openmeter(world: World, secret: str | None = None) -> OpenMeterClient:
    return OpenMeterClient(endpoint=world.base_url, token=secret or world.secret_a)


async def test_openmeter_sdk_and_cloudevents_count_once(world: World) -> None:
    calls_before = (await world.aggregate(world.org_a, world.calls))[0]
    tokens_before, value_before = await world.aggregate(world.org_a, world.tokens)
    client = _openmeter(world)
    one = OpenMeterEvent(
        id=f"om-1-{world.suffix}",
        source="my-app",
        specversion="1.0",
        type=world.calls,
        subject=world.org_a,
        time=datetime.now(UTC),
    )
    await asyncio.to_thread(client.events.ingest_event, one)
    await asyncio.to_thread(client.events.ingest_event, one)  # the same source + id: once
    # Another source with the same id is another event.
    other = OpenMeterEvent(
        id=f"om-1-{world.suffix}",
        source="my-other-app",
        specversion="1.0",
        type=world.calls,
        subject=world.org_a,
    )
    batch = [
        other,
        OpenMeterEvent(
            id=f"om-2-{world.suffix}",
            source="my-app",
            specversion="1.0",
            type=world.tokens,
            subject=world.org_a,
            data={"tokens": 7, "model": {"name": "small"}},
        ),
    ]
    await asyncio.to_thread(client.events.ingest_events, batch)
    await asyncio.to_thread(client.events.ingest_events, batch)
    await world.settled(world.org_a, world.calls, calls_before + 2)
    value = await world.settled(world.org_a, world.tokens, tokens_before + 1)
    assert int(value) == int(value_before) + 7

    # The cloudevents SDK's structured mode, as product code may already emit it.
    event = CloudEvent(
        {
            "id": f"ce-1-{world.suffix}",
            "source": "ce-app",
            "type": world.calls,
            "subject": world.org_a,
        },
        {"route": "/v1/things"},
    )
    headers, body = to_structured(event)
    auth = {"Authorization": f"Bearer {world.secret_a}"}
    for _ in range(2):
        r = await world.http.post("/api/v1/events", content=body, headers={**headers, **auth})
        assert r.status_code == 204, r.text
    await world.settled(world.org_a, world.calls, calls_before + 3)


async def test_openmeter_rejections_and_bad_input_are_problems(world: World) -> None:
    client = _openmeter(world)
    unknown = OpenMeterEvent(
        id=f"om-bad-{world.suffix}",
        source="my-app",
        specversion="1.0",
        type="no_such_metric",
        subject=world.org_a,
    )
    with pytest.raises(HttpResponseError) as refused:
        await asyncio.to_thread(client.events.ingest_event, unknown)
    assert refused.value.status_code == 400
    auth = {"Authorization": f"Bearer {world.secret_a}"}
    batch_type = {**auth, "content-type": "application/cloudevents-batch+json"}
    good = {
        "specversion": "1.0",
        "id": f"om-mixed-{world.suffix}",
        "source": "my-app",
        "type": world.calls,
        "subject": world.org_a,
    }
    r = await world.http.post(
        "/api/v1/events",
        content=json.dumps([good, {**good, "id": "x", "type": "no_such_metric"}]),
        headers=batch_type,
    )
    assert r.status_code == 400
    problem = r.json()
    assert problem["reason"] == "EVENTS_REJECTED"
    assert [v["field"] for v in problem["violations"]] == ["[1]"]
    assert problem["violations"][0]["description"].startswith("unknown_metric")
    r = await world.http.post(
        "/api/v1/events",
        content=json.dumps([{"specversion": "0.3", "id": "", "source": "s"}]),
        headers=batch_type,
    )
    assert r.status_code == 400
    fields = {v["field"] for v in r.json()["violations"]}
    assert {"[0].specversion", "[0].id", "[0].type", "[0].subject"} <= fields
    r = await world.http.post(
        "/api/v1/events", content=json.dumps([good] * 1001), headers=batch_type
    )
    assert r.status_code == 400 and r.json()["reason"] == "BATCH_TOO_LARGE"
    r = await world.http.post("/api/v1/events", content=b"[{", headers=batch_type)
    assert r.status_code == 400 and r.json()["reason"] == "MALFORMED_JSON"


async def test_api_keys_listed_without_secrets_revoked_and_unknown_are_401(world: World) -> None:
    http, admin = world.http, admin_headers()
    created = await http.post(
        f"{ADMIN}/orgs/{world.org_a}/apiKeys", json={"name": "to revoke"}, headers=admin
    )
    assert created.status_code == 200, created.text
    key = created.json()["apiKey"]
    secret = created.json()["secret"]
    assert key["orgId"] == world.org_a and secret.startswith("tally_key_")
    listed = await http.get(f"{ADMIN}/orgs/{world.org_a}/apiKeys", headers=admin)
    assert listed.status_code == 200
    assert key["keyId"] in [k["keyId"] for k in listed.json()["apiKeys"]]
    assert secret not in listed.text and "secret" not in listed.text

    # The key works (and is now cached by the gateway) ...
    await asyncio.to_thread(
        _openmeter(world, secret).events.ingest_event,
        OpenMeterEvent(
            id=f"rev-{world.suffix}",
            source="s",
            specversion="1.0",
            type=world.calls,
            subject=world.org_a,
        ),
    )
    revoked = await http.post(
        f"{ADMIN}/orgs/{world.org_a}/apiKeys/{key['keyId']}:revoke", json={}, headers=admin
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["apiKey"]["revokeTime"]
    # ... and is refused right after its revocation, cache or not.
    with pytest.raises(ClientAuthenticationError):
        await asyncio.to_thread(
            _openmeter(world, secret).events.ingest_event,
            OpenMeterEvent(
                id=f"rev-2-{world.suffix}",
                source="s",
                specversion="1.0",
                type=world.calls,
                subject=world.org_a,
            ),
        )
    with pytest.raises(LagoApiError) as lago_refused:
        await asyncio.to_thread(
            _lago(world, secret).events.create,
            Event(
                transaction_id="t",
                external_subscription_id="s",
                code=world.calls,
                timestamp=None,
                properties=None,
            ),
        )
    assert lago_refused.value.status_code == 401
    for bad in ("", "Bearer tally_key_0000_nope", "Basic abc"):
        r = await http.post(
            "/api/v1/events/batch",
            json={"events": []},
            headers={"Authorization": bad} if bad else {},
        )
        assert r.status_code == 401, (bad, r.text)
        assert r.json()["status"] == 401
    still = await http.get(
        f"{ADMIN}/orgs/{world.org_a}/apiKeys", params={"includeRevoked": "true"}, headers=admin
    )
    listed_revoked = {k["keyId"]: k for k in still.json()["apiKeys"]}
    assert listed_revoked[key["keyId"]].get("revokeTime")
    active = await http.get(f"{ADMIN}/orgs/{world.org_a}/apiKeys", headers=admin)
    assert key["keyId"] not in active.text
    # Another org's key id cannot be revoked through this org.
    r = await http.post(
        f"{ADMIN}/orgs/{world.org_b}/apiKeys/{key['keyId']}:revoke", json={}, headers=admin
    )
    assert r.status_code == 404


def _stripe(world: World, key: str | None = None) -> stripe.StripeClient:
    return stripe.StripeClient(
        key or world.secret_a,
        base_addresses={"api": world.base_url, "meter_events": world.base_url},
        max_network_retries=0,
    )


async def test_stripe_sdk_meter_events_v1_and_v2_count_once(world: World) -> None:
    tokens_before, value_before = await world.aggregate(world.org_a, world.tokens)
    client = _stripe(world)
    params: dict[str, Any] = {
        "event_name": world.tokens,
        "identifier": f"stripe-1-{world.suffix}",
        "payload": {"stripe_customer_id": world.org_a, "value": "25"},
        "timestamp": int(datetime.now(UTC).timestamp()),
    }
    answer = await asyncio.to_thread(client.v1.billing.meter_events.create, params)
    assert answer.object == "billing.meter_event"
    assert answer.identifier == params["identifier"]
    assert answer.payload["value"] == "25"
    await asyncio.to_thread(client.v1.billing.meter_events.create, params)  # counted once
    value = await world.settled(world.org_a, world.tokens, tokens_before + 1)
    assert int(value) == int(value_before) + 25

    session = await asyncio.to_thread(client.v2.billing.meter_event_session.create)
    assert session.authentication_token
    streaming = _stripe(world, session.authentication_token)
    events = {
        "events": [
            {
                "event_name": world.tokens,
                "identifier": f"stripe-v2-{i}-{world.suffix}",
                "payload": {"stripe_customer_id": world.org_a, "value": str(i + 1)},
            }
            for i in range(100)
        ]
    }
    await asyncio.to_thread(streaming.v2.billing.meter_event_stream.create, events)
    await asyncio.to_thread(streaming.v2.billing.meter_event_stream.create, events)
    value = await world.settled(world.org_a, world.tokens, tokens_before + 101)
    assert int(value) == int(value_before) + 25 + sum(range(1, 101))


async def test_stripe_errors_in_stripes_shape(world: World) -> None:
    client = _stripe(world)
    with pytest.raises(stripe.InvalidRequestError) as other_org:
        await asyncio.to_thread(
            client.v1.billing.meter_events.create,
            {"event_name": world.calls, "payload": {"stripe_customer_id": world.org_b}},
        )
    # Org B's id names no subscription of the key's org: rejected, never written.
    assert other_org.value.code == "unknown_subscription"
    assert other_org.value.param == "payload[stripe_customer_id]"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await asyncio.to_thread(
            client.v1.billing.meter_events.create,
            {"event_name": "no_such_metric", "payload": {"stripe_customer_id": world.org_a}},
        )
    assert unknown.value.code == "unknown_metric"
    with pytest.raises(stripe.AuthenticationError):
        await asyncio.to_thread(
            _stripe(world, "tally_key_nope").v1.billing.meter_events.create,
            {"event_name": world.calls, "payload": {"stripe_customer_id": world.org_a}},
        )
    # A session token that is not one, and more than 100 events in a stream call.
    r = await world.http.post(
        "/v2/billing/meter_event_stream",
        json={"events": []},
        headers={"Authorization": f"Bearer {world.secret_a}"},
    )
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    session = await world.http.post(
        "/v2/billing/meter_event_session", headers={"Authorization": f"Bearer {world.secret_a}"}
    )
    token = session.json()["authentication_token"]
    one = {"event_name": world.calls, "payload": {"stripe_customer_id": world.org_a}}
    r = await world.http.post(
        "/v2/billing/meter_event_stream",
        json={"events": [one] * 101},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 400, r.text
    assert "1 to 100" in r.json()["error"]["message"]
