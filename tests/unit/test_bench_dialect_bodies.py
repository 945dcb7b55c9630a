"""The bench's dialect bodies: one org per call, every event of the plan once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.bench.events import EventPlan

AT = datetime(2026, 12, 3, 14, 0, 0, 250_000, tzinfo=UTC)
ORGS = ["org-a", "org-b", "org-c"]


def _plan(count: int, run: int = 100) -> EventPlan:
    return EventPlan("p", count, ORGS, "calls", AT, run)


@given(count=st.integers(min_value=1, max_value=1_000), runs=st.integers(min_value=1, max_value=3))
def test_each_dialect_body_is_one_orgs_and_covers_the_plan_once(count: int, runs: int) -> None:
    plan = _plan(count, run=100 * runs)
    lago = [
        (org, [(e["external_customer_id"], e["transaction_id"]) for e in b["events"]])
        for org, b in plan.lago_batches(100)
    ]
    openmeter = [
        (org, [(e["subject"], e["id"]) for e in b]) for org, b in plan.cloudevents_batches(100)
    ]
    stripe = [
        (org, [(e["payload"]["stripe_customer_id"], e["identifier"]) for e in b["events"]])
        for org, b in plan.stripe_batches(100)
    ]
    expected = [(plan.org_of(i), plan.key_of(i)) for i in range(count)]
    for batches in (lago, openmeter, stripe):
        assert all(0 < len(events) <= 100 for _, events in batches)
        assert all(named == org for org, events in batches for named, _ in events)
        assert [pair for _, events in batches for pair in events] == expected


def test_a_batch_spanning_two_orgs_is_refused() -> None:
    with pytest.raises(ValueError, match="spans two orgs"):
        list(_plan(300, run=100).org_batches(150))


def test_times_are_each_dialects_own_format() -> None:
    plan = _plan(1)
    [(_, lago)] = plan.lago_batches(100)
    [(_, cloud)] = plan.cloudevents_batches(100)
    [(_, stripe)] = plan.stripe_batches(100)
    assert lago["events"][0]["timestamp"] == AT.timestamp()  # fractional Unix seconds
    assert cloud[0]["time"] == "2026-12-03T14:00:00.250000Z"
    # Whole seconds, rounded up: never before a period starting within that second.
    assert stripe["events"][0]["timestamp"] == int(AT.timestamp()) + 1
