"""Pure rules of outbound webhooks and the receiver's verify helper."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tally.events.v1 import invoicing_events_pb2 as ie
from tally.events.v1 import subscriptions_events_pb2 as se
from tally.events.v1 import usage_events_pb2 as ue
from tally.subscriptions.v1 import resources_pb2 as sub_pb2
from tally.usage.v1 import resources_pb2 as usage_pb2

from services.kit.events import subject_of
from services.payments.outbound import consumers
from services.payments.outbound import domain as d
from services.usage.emitter import WebhookSignatureError, verify_signature

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_patterns_select_exact_types_families_and_everything() -> None:
    assert d.selects(["invoice.paid"], "invoice.paid")
    assert not d.selects(["invoice.paid"], "invoice.voided")
    assert d.selects(["subscription.*"], "subscription.period_closed")
    assert not d.selects(["subscription.*"], "payment.succeeded")
    assert d.selects(["*"], "usage.threshold_crossed")
    assert not d.selects([], "invoice.paid")


def test_unknown_types_and_bad_urls_are_named() -> None:
    found = d.pattern_violations(["invoice.paid", "invoice.exploded", "nothing.*"])
    assert [v.field for v in found] == ["event_types[1]", "event_types[2]"]
    assert d.pattern_violations([])[0].field == "event_types"
    assert d.url_violations("https://example.com/hooks") == []
    assert d.url_violations("ftp://example.com")[0].field == "url"
    assert d.url_violations("/relative")[0].field == "url"


def test_org_comes_from_the_event_or_the_resource_it_carries() -> None:
    assert d.org_of(ie.InvoicePaidEvent(org_id="org_a")) == "org_a"
    created = se.SubscriptionCreatedEvent(subscription=sub_pb2.Subscription(org_id="org_b"))
    assert d.org_of(created) == "org_b"
    crossed = ue.UsageThresholdCrossedEvent(aggregate=usage_pb2.UsageAggregate(org_id="org_c"))
    assert d.org_of(crossed) == "org_c"
    assert d.org_of(ue.UsageEventRejectedEvent(org_id="org_d")) == "org_d"
    assert d.org_of(ie.InvoicePaidEvent()) == ""


def test_every_selectable_type_has_a_consumer_and_back() -> None:
    consumed = {
        d.event_type_of(subject_of(cls)) for classes in consumers.EVENTS.values() for cls in classes
    }
    assert consumed == d.EVENT_TYPES


def test_event_type_is_the_subject_without_its_producer() -> None:
    assert d.event_type_of("tally.invoicing.invoice.finalized") == "invoice.finalized"
    assert d.event_type_of("tally.usage.usage.threshold_crossed") == "usage.threshold_crossed"


def test_delivery_id_is_stable_per_event_and_endpoint() -> None:
    assert d.delivery_id("e1", "we1") == d.delivery_id("e1", "we1")
    assert d.delivery_id("e1", "we1") != d.delivery_id("e1", "we2")
    assert d.delivery_id("e1", "we1") != d.delivery_id("e2", "we1")


def test_payload_is_the_event_as_json_with_its_envelope() -> None:
    body = d.payload(
        delivery="evt_1",
        event_type="invoice.paid",
        created=T0,
        org_id="org_a",
        event=ie.InvoicePaidEvent(invoice_id="inv_1", org_id="org_a"),
    )
    parsed = json.loads(body)
    assert parsed == {
        "id": "evt_1",
        "type": "invoice.paid",
        "created": int(T0.timestamp()),
        "org_id": "org_a",
        "data": {"invoice_id": "inv_1", "org_id": "org_a"},
    }


def test_backoff_doubles_up_to_its_cap_and_ends_after_three_days() -> None:
    p = d.RetryPolicy()
    assert [p.wait_after(n) for n in (1, 2, 3)] == [
        timedelta(seconds=30),
        timedelta(seconds=60),
        timedelta(seconds=120),
    ]
    assert p.wait_after(50) == p.max_wait
    at, attempts = T0, 1
    while (nxt := p.next_attempt(T0, attempts, at)) is not None:
        assert nxt - at == p.wait_after(attempts)
        at, attempts = nxt, attempts + 1
    assert p.horizon - p.max_wait <= at - T0 <= p.horizon


@given(
    first=st.integers(min_value=10, max_value=600),
    factor=st.floats(min_value=1.5, max_value=4.0),
    cap_hours=st.integers(min_value=1, max_value=24),
    horizon_days=st.integers(min_value=1, max_value=5),
)
def test_any_schedule_grows_within_its_cap_and_ends_inside_its_horizon(
    first: int, factor: float, cap_hours: int, horizon_days: int
) -> None:
    p = d.RetryPolicy(
        first_wait=timedelta(seconds=first),
        factor=factor,
        max_wait=timedelta(hours=cap_hours),
        horizon=timedelta(days=horizon_days),
    )
    at, attempts, previous = T0, 1, timedelta(0)
    while (nxt := p.next_attempt(T0, attempts, at)) is not None:
        wait = nxt - at
        assert previous <= wait <= p.max_wait
        at, attempts, previous = nxt, attempts + 1, wait
        assert attempts < 1_000
    assert at - T0 <= p.horizon
    # It ends only because the next wait would pass the horizon.
    assert at + p.wait_after(attempts) - T0 > p.horizon


def test_sustained_failure_disables() -> None:
    p = d.RetryPolicy()
    assert not d.should_disable(p, None, T0, final=True)
    assert not d.should_disable(p, T0, T0 + timedelta(days=2), final=False)
    assert d.should_disable(p, T0, T0 + timedelta(days=3), final=False)
    assert d.should_disable(p, T0, T0 + timedelta(hours=1), final=True)


@given(body=st.binary(max_size=200), secret=st.text(min_size=1, max_size=40))
def test_what_tally_signs_verifies(body: bytes, secret: str) -> None:
    header = d.signature_header([secret], 1_800_000_000, body)
    verify_signature(body, header, secret, now=1_800_000_000)


@given(body=st.binary(min_size=1, max_size=200), flip=st.integers(min_value=0))
def test_any_altered_byte_fails(body: bytes, flip: int) -> None:
    header = d.signature_header(["whsec_x"], 1_800_000_000, body)
    i = flip % len(body)
    altered = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(altered, header, "whsec_x", now=1_800_000_000)


def test_during_a_rotation_either_secret_verifies() -> None:
    header = d.signature_header(["whsec_new", "whsec_old"], 1_800_000_000, b"{}")
    verify_signature(b"{}", header, "whsec_new", now=1_800_000_000)
    verify_signature(b"{}", header, "whsec_old", now=1_800_000_000)
    with pytest.raises(WebhookSignatureError):
        verify_signature(b"{}", header, "whsec_other", now=1_800_000_000)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "missing"),
        ("v1=abc", "no timestamp"),
        ("t=1800000000", "no v1"),
        ("t=soon,v1=abc", "bad timestamp"),
    ],
)
def test_malformed_headers_say_what_is_wrong(header: str, message: str) -> None:
    with pytest.raises(WebhookSignatureError, match=message):
        verify_signature(b"{}", header, "whsec_x", now=1_800_000_000)


def test_a_stale_signature_is_refused_unless_the_age_check_is_off() -> None:
    header = d.signature_header(["whsec_x"], 1_800_000_000, b"{}")
    with pytest.raises(WebhookSignatureError, match="tolerance 300s"):
        verify_signature(b"{}", header, "whsec_x", now=1_800_000_301)
    verify_signature(b"{}", header, "whsec_x", now=1_800_000_299)
    verify_signature(b"{}", header, "whsec_x", tolerance_seconds=0, now=1_900_000_000)
