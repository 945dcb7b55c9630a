"""The dialect codecs (Lago, OpenMeter) and the gateway's API key cache, without services."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Route

from gateway.apikeys import ApiKeyVerifier, KeyPrincipal, bearer_secret
from gateway.dialects import DialectError, Outcome, lago, openmeter, stripe_meter, unix_time
from gateway.dialects.routes import DialectRoutes
from gateway.problems import Problem

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def lago_event(**extra: Any) -> dict[str, Any]:
    return {"transaction_id": "tx-1", "code": "api_calls", **extra}


def test_lago_event_mapped_onto_the_key_org() -> None:
    [event] = lago.decode(
        {
            "event": lago_event(
                external_subscription_id="sub-1",
                external_customer_id="org_a",
                timestamp=1764770400.25,
                properties={"tokens": 12, "ratio": 0.5, "region": "eu", "ok": True},
            )
        },
        "org_a",
        batch=False,
    )
    assert event.org_id == "org_a"
    assert event.idempotency_key == "tx-1"
    assert event.metric_code == "api_calls"
    # Resolved by the usage service: the org's subscription with that external id, or that id.
    assert (event.external_subscription_id, event.subscription_id) == ("sub-1", "")
    assert event.event_time.ToDatetime(UTC) == EPOCH + timedelta(seconds=1764770400.25)
    assert dict(event.properties) == {"tokens": "12", "ratio": "0.5", "region": "eu", "ok": "true"}


def test_lago_refuses_another_customer_and_names_every_bad_field() -> None:
    with pytest.raises(DialectError) as bad:
        lago.decode({"event": {"external_customer_id": "org_b"}}, "org_a", batch=False)
    assert bad.value.details == {
        "transaction_id": ["value_is_mandatory"],
        "code": ["value_is_mandatory"],
        "external_customer_id": ["customer_not_found"],
    }
    with pytest.raises(DialectError) as batch:
        lago.decode(
            {"events": [lago_event(), lago_event(timestamp="soon", properties={"a": [1]})]},
            "org_a",
            batch=True,
        )
    assert batch.value.details == {
        "1": {"timestamp": ["invalid_format"], "properties": ["invalid_format: a"]}
    }


@pytest.mark.parametrize("body", [[], {"events": []}, {"events": {}}, {"event": "x"}])
def test_lago_malformed_bodies(body: Any) -> None:
    with pytest.raises(DialectError):
        lago.decode(body, "org_a", batch=isinstance(body, dict) and "events" in body)


def test_lago_oversize_batch_refused_whole() -> None:
    with pytest.raises(DialectError) as bad:
        lago.decode({"events": [lago_event()] * 1001}, "org_a", batch=True)
    assert "at most 1000" in bad.value.message


def test_lago_error_shape_and_stable_lago_id() -> None:
    assert lago.error_body(422, "validation_errors", {"code": ["unknown_metric"]}) == {
        "status": 422,
        "error": "Unprocessable Entity",
        "code": "validation_errors",
        "error_details": {"code": ["unknown_metric"]},
    }
    [event] = lago.decode({"event": lago_event()}, "org_a", batch=False)
    [same] = lago.decode({"event": lago_event()}, "org_a", batch=False)
    [other_org] = lago.decode({"event": lago_event()}, "org_b", batch=False)
    outcome = Outcome("accepted", "", "")
    first = lago.event_answer(event, outcome)["lago_id"]
    assert first == lago.event_answer(same, outcome)["lago_id"]
    assert first != lago.event_answer(other_org, outcome)["lago_id"]


@given(st.integers(min_value=0, max_value=253402300799 * 10**6 - 1))
def test_unix_seconds_keep_every_microsecond(micros: int) -> None:
    text = str(Decimal(micros) / 10**6)
    assert unix_time(text) == EPOCH + timedelta(microseconds=micros)


@pytest.mark.parametrize("value", [True, None, "soon", "NaN", "inf", [1], 1e300])
def test_unix_time_refuses_what_is_no_time(value: Any) -> None:
    assert unix_time(value) is None


def cloudevent(**extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "source": "//app",
        "type": "tokens",
        "subject": "org_a",
        **extra,
    }


def test_openmeter_dedupes_by_source_and_id_and_flattens_data() -> None:
    [event] = openmeter.decode(
        cloudevent(
            time="2026-12-03T10:00:00.5Z",
            data={"tokens": 7, "model": {"name": "small"}, "tags": ["a"], "none": None},
        ),
        "org_a",
    )
    assert event.idempotency_key == "//app e-1"
    assert event.metric_code == "tokens"
    assert event.org_id == "org_a"
    assert dict(event.properties) == {"tokens": "7", "model.name": "small", "tags": '["a"]'}
    assert event.event_time.ToJsonString() == "2026-12-03T10:00:00.500Z"
    [a, b] = openmeter.decode([cloudevent(), cloudevent(source="//other")], "org_a")
    assert a.idempotency_key != b.idempotency_key
    # A subject other than the org names one of its subscriptions by external id.
    [by_subject] = openmeter.decode(cloudevent(subject="lago-sub-1"), "org_a")
    assert (by_subject.org_id, by_subject.external_subscription_id) == ("org_a", "lago-sub-1")
    assert a.external_subscription_id == ""


def test_openmeter_problems_name_each_attribute() -> None:
    with pytest.raises(Problem) as bad:
        openmeter.decode([cloudevent(), {"specversion": "0.3", "subject": "org_b"}], "org_a")
    assert bad.value.status == 400
    assert {v.field for v in bad.value.violations} == {
        "[1].specversion",
        "[1].id",
        "[1].source",
        "[1].type",
    }
    with pytest.raises(Problem) as big:
        openmeter.decode([cloudevent()] * 1001, "org_a")
    assert big.value.reason == "BATCH_TOO_LARGE"


class FakeVerify:
    def __init__(self) -> None:
        self.calls = 0
        self.valid: dict[str, KeyPrincipal] = {}

    async def __call__(self, secret: str) -> KeyPrincipal | None:
        self.calls += 1
        return self.valid.get(secret)


def bearer(secret: str) -> Headers:
    return Headers({"authorization": f"Bearer {secret}"})


async def test_api_key_cache_ttl_forget_and_unknown_keys() -> None:
    now = [0.0]
    verify = FakeVerify()
    verify.valid["s1"] = KeyPrincipal("org_a", "key_1")
    cache = ApiKeyVerifier(verify, ttl_seconds=10, clock=lambda: now[0])
    assert (await cache.principal(bearer("s1"))).org_id == "org_a"
    await cache.principal(bearer("s1"))
    assert verify.calls == 1  # cached
    del verify.valid["s1"]  # revoked elsewhere: honoured once the TTL ends
    now[0] = 9.9
    await cache.principal(bearer("s1"))
    now[0] = 10.0
    with pytest.raises(Problem) as gone:
        await cache.principal(bearer("s1"))
    assert gone.value.status == 401
    verify.valid["s2"] = KeyPrincipal("org_a", "key_2")
    await cache.principal(bearer("s2"))
    cache.forget("key_2")  # revoked through this gateway: at once
    del verify.valid["s2"]
    with pytest.raises(Problem):
        await cache.principal(bearer("s2"))
    calls = verify.calls
    for _ in range(2):  # unknown keys are asked each time, never cached
        with pytest.raises(Problem):
            await cache.principal(bearer("nope"))
    assert verify.calls == calls + 2
    for headers in (Headers({}), Headers({"authorization": "Basic abc"})):
        with pytest.raises(Problem) as missing:
            await cache.principal(headers)
        assert missing.value.status == 401


def test_stripe_form_mapped_and_other_customers_refused() -> None:
    event = stripe_meter.decode_form(
        [
            ("event_name", "tokens"),
            ("identifier", "id-1"),
            ("timestamp", "1764770400"),
            ("payload[stripe_customer_id]", "org_a"),
            ("payload[value]", "25"),
            ("payload[model]", "small"),
        ],
        "org_a",
    )
    assert (event.metric_code, event.idempotency_key, event.value) == ("tokens", "id-1", "25")
    assert dict(event.properties) == {"model": "small"}
    assert event.event_time.seconds == 1764770400
    # Another customer names one of the org's subscriptions by external id.
    by_customer = stripe_meter.decode_form(
        [("event_name", "t"), ("payload[stripe_customer_id]", "cus_1")], "org_a"
    )
    assert (by_customer.org_id, by_customer.external_subscription_id) == ("org_a", "cus_1")
    assert event.external_subscription_id == ""
    for pairs, param in (
        ([("event_name", "t")], "payload[stripe_customer_id]"),
        ([("payload[stripe_customer_id]", "org_a")], "event_name"),
        (
            [
                ("event_name", "t"),
                ("payload[stripe_customer_id]", "org_a"),
                ("payload[value]", "1.5"),
            ],
            "payload[value]",
        ),
        (
            [("event_name", "t"), ("payload[stripe_customer_id]", "org_a"), ("timestamp", "soon")],
            "timestamp",
        ),
    ):
        with pytest.raises(DialectError) as bad:
            stripe_meter.decode_form(pairs, "org_a")
        assert bad.value.details["param"] == [param]
    # Without an identifier each call is a new event, as Stripe makes one up.
    a, b = (
        stripe_meter.decode_form(
            [("event_name", "t"), ("payload[stripe_customer_id]", "org_a")], "org_a"
        )
        for _ in range(2)
    )
    assert a.idempotency_key != b.idempotency_key


def test_stripe_sessions_seal_the_key_for_15_minutes() -> None:
    sessions = stripe_meter.Sessions(None)
    token = sessions.open("tally_key_1_secret", now=1_000_000)["authentication_token"]
    assert "tally_key_1_secret" not in token
    assert sessions.secret(token, now=1_000_000 + 899) == "tally_key_1_secret"
    assert sessions.secret(token, now=1_000_000 + 901) is None
    assert stripe_meter.Sessions(None).secret(token, now=1_000_000) is None  # another key
    assert sessions.secret("garbage", now=1_000_000) is None


def test_the_key_as_basic_auth_user_name_as_curl_u_sends_it() -> None:
    basic = base64.b64encode(b"tally_key_1_secret:").decode()
    assert bearer_secret(Headers({"authorization": f"Basic {basic}"})) == "tally_key_1_secret"
    assert bearer_secret(Headers({"authorization": "Bearer tally_key_1_secret"})) == (
        "tally_key_1_secret"
    )
    for bad in ("Basic !!", "Basic " + base64.b64encode(b":pw").decode(), "Token x", "Bearer "):
        with pytest.raises(Problem):
            bearer_secret(Headers({"authorization": bad}))


async def test_a_refusal_keeps_its_status_and_headers_in_every_dialect() -> None:
    """A spent rate limit is each dialect's 429 with Retry-After; a service away its 503."""
    verify = FakeVerify()
    verify.valid["s1"] = KeyPrincipal("org_a", "key_1")
    refusal: list[Problem] = []

    async def admit(principal: KeyPrincipal | None) -> None:
        if principal is not None and refusal:
            raise refusal[0]

    async def record(events: Any, principal: KeyPrincipal, rid: str) -> Any:
        raise Problem(503, "the usage service is not reachable", "UNAVAILABLE")

    routes = DialectRoutes(
        ApiKeyVerifier(verify, 10), record, admit, lambda _: "rid-1", stripe_meter.Sessions(None)
    )
    app = Starlette(
        routes=[
            Route("/api/v1/events", routes.events, methods=["POST"]),
            Route("/v1/billing/meter_events", routes.stripe_v1, methods=["POST"]),
        ]
    )
    auth = {"Authorization": "Bearer s1"}
    lago_body = {"event": {"transaction_id": "t", "code": "c"}}
    cloud = {"specversion": "1.0", "id": "i", "source": "s", "type": "c", "subject": "org_a"}
    stripe_form = {"event_name": "c", "payload[stripe_customer_id]": "org_a"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    ) as http:
        for limited in (False, True):
            refusal[:] = [Problem(429, "slow down", "RATE_LIMITED", headers={"Retry-After": "7"})]
            if not limited:
                refusal.clear()
            status = 429 if limited else 503
            lago_answer = await http.post("/api/v1/events", json=lago_body, headers=auth)
            om_answer = await http.post("/api/v1/events", json=cloud, headers=auth)
            stripe_answer = await http.post(
                "/v1/billing/meter_events", data=stripe_form, headers=auth
            )
            for answer in (lago_answer, om_answer, stripe_answer):
                assert answer.status_code == status, answer.text
                assert (answer.headers.get("retry-after") == "7") is limited
            assert lago_answer.json()["status"] == status
            assert om_answer.headers["content-type"].startswith("application/problem+json")
            assert stripe_answer.json()["error"]["type"] == (
                "invalid_request_error" if limited else "api_error"
            )
