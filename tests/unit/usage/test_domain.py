"""The usage domain without I/O: validation, subscription/period resolution and
aggregation semantics, with property tests for exactly-once aggregation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.usage.domain import (
    AggregateState,
    Aggregation,
    IncomingEvent,
    PeriodView,
    Rejected,
    RejectionReason,
    StoredEvent,
    SubscriptionState,
    SubscriptionView,
    ValidEvent,
    fold,
    fold_into,
    parse_value,
    resolve_subscription,
    validate_event,
)
from services.usage.domain.periods import Placement
from tests.support.usage_views import METRICS

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)

SUB = SubscriptionView("s1", "org", SubscriptionState.ACTIVE, (PeriodView(START, END),))


def check(
    event: IncomingEvent, subs: list[SubscriptionView] | None = None
) -> ValidEvent | Rejected:
    subs = [SUB] if subs is None else subs
    by_org: dict[str, list[SubscriptionView]] = {}
    for s in subs:
        by_org.setdefault(s.org_id, []).append(s)
    return validate_event(
        event,
        now=NOW,
        metrics=METRICS,
        subscriptions_by_id={s.subscription_id: s for s in subs},
        subscriptions_by_org=by_org,
    )


def reason(outcome: ValidEvent | Rejected) -> RejectionReason | None:
    return outcome.reason if isinstance(outcome, Rejected) else None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.5", Decimal("12.5")),
        (" 3 ", Decimal(3)),
        ("1e3", Decimal(1000)),
        ("0.000000000001", Decimal("1E-12")),
        ("1.5000000000000000", Decimal("1.5")),
    ],
)
def test_parse_value_accepts_decimals(text: str, expected: Decimal) -> None:
    assert parse_value(text) == expected


@pytest.mark.parametrize("text", ["twelve", "NaN", "Infinity", "0.0000000000001", "1e30", ""])
def test_parse_value_rejects_what_is_not_a_usable_number(text: str) -> None:
    outcome = parse_value(text)
    assert isinstance(outcome, Rejected) and outcome.reason is RejectionReason.INVALID_VALUE


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (IncomingEvent("org", "calls", "k"), None),
        (IncomingEvent("org", "calls", ""), RejectionReason.INVALID_IDEMPOTENCY_KEY),
        (IncomingEvent("org", "calls", "k" * 129), RejectionReason.INVALID_IDEMPOTENCY_KEY),
        (IncomingEvent("org", "nope", "k"), RejectionReason.UNKNOWN_METRIC),
        (IncomingEvent("org", "old", "k"), RejectionReason.UNKNOWN_METRIC),
        (IncomingEvent("org", "bytes", "k"), RejectionReason.INVALID_VALUE),
        (IncomingEvent("org", "bytes", "k", "x"), RejectionReason.INVALID_VALUE),
        (IncomingEvent("org", "bytes", "k", "-1"), RejectionReason.NEGATIVE_VALUE),
        (IncomingEvent("org", "seats", "k", "-0.5"), RejectionReason.NEGATIVE_VALUE),
        (IncomingEvent("org", "bytes", "k", properties={"bytes": "4"}), None),
        (IncomingEvent("org", "users", "k"), RejectionReason.MISSING_PROPERTY),
        (
            IncomingEvent("org", "users", "k", properties={"user_id": ""}),
            RejectionReason.MISSING_PROPERTY,
        ),
        (IncomingEvent("org", "users", "k", properties={"user_id": "ann"}), None),
        (IncomingEvent("org", "calls", "k", "not-a-number"), None),  # count ignores values
        (
            IncomingEvent("org", "calls", "k", event_time=NOW + timedelta(minutes=5)),
            None,
        ),
        (
            IncomingEvent("org", "calls", "k", event_time=NOW + timedelta(minutes=5, seconds=1)),
            RejectionReason.FUTURE_TIMESTAMP,
        ),
        (IncomingEvent("other", "calls", "k"), RejectionReason.NO_ACTIVE_SUBSCRIPTION),
        (
            IncomingEvent("org", "calls", "k", subscription_id="s9"),
            RejectionReason.UNKNOWN_SUBSCRIPTION,
        ),
        (
            IncomingEvent("org", "calls", "k", event_time=START - timedelta(seconds=1)),
            RejectionReason.NO_ACTIVE_SUBSCRIPTION,
        ),
    ],
)
def test_validation_rules(event: IncomingEvent, expected: RejectionReason | None) -> None:
    assert reason(check(event)) is expected


def test_a_valid_event_is_resolved_to_its_subscription_and_period() -> None:
    outcome = check(IncomingEvent("org", "bytes", "k", "2.50", event_time=NOW))
    assert isinstance(outcome, ValidEvent)
    assert (outcome.subscription_id, outcome.period_start, outcome.period_end) == ("s1", START, END)
    assert outcome.value == Decimal("2.50") and outcome.event_time == NOW
    unset = check(IncomingEvent("org", "users", "k", properties={"user_id": "ann"}))
    assert isinstance(unset, ValidEvent)
    assert unset.event_time == NOW and unset.unique_value == "ann" and unset.value is None


def test_closed_period_rejects_and_open_latest_period_absorbs_after_its_end() -> None:
    closed = PeriodView(START - timedelta(days=30), START, closed=True)
    sub = SubscriptionView("s1", "org", SubscriptionState.ACTIVE, (closed, PeriodView(START, END)))
    by_id, by_org = {"s1": sub}, {"org": [sub]}
    late = resolve_subscription("org", "", START - timedelta(days=1), by_id, by_org)
    assert isinstance(late, Rejected) and late.reason is RejectionReason.PERIOD_CLOSED
    after = resolve_subscription("org", "", END + timedelta(hours=2), by_id, by_org)
    assert isinstance(after, Placement) and after.period.start == START


def test_paused_and_canceled_take_usage_only_before() -> None:
    pause = NOW - timedelta(hours=1)
    paused = SubscriptionView(
        "s1", "org", SubscriptionState.PAUSED, (PeriodView(START, END),), pause_time=pause
    )
    before = IncomingEvent("org", "calls", "k", event_time=pause - timedelta(seconds=1))
    during = IncomingEvent("org", "calls", "k", event_time=pause)
    assert reason(check(before, [paused])) is None
    assert reason(check(during, [paused])) is RejectionReason.NO_ACTIVE_SUBSCRIPTION
    canceled = SubscriptionView(
        "s1", "org", SubscriptionState.CANCELED, (PeriodView(START, END),), end_time=pause
    )
    assert reason(check(before, [canceled])) is None
    assert reason(check(during, [canceled])) is RejectionReason.NO_ACTIVE_SUBSCRIPTION


def test_org_events_pick_the_subscription_taking_usage_at_their_time() -> None:
    switch = NOW - timedelta(days=2)
    old = SubscriptionView(
        "old", "org", SubscriptionState.CANCELED, (PeriodView(START, END),), end_time=switch
    )
    new = SubscriptionView("new", "org", SubscriptionState.ACTIVE, (PeriodView(switch, END),))
    early = check(
        IncomingEvent("org", "calls", "k", event_time=switch - timedelta(hours=1)), [old, new]
    )
    late = check(IncomingEvent("org", "calls", "k", event_time=switch), [old, new])
    assert isinstance(early, ValidEvent) and early.subscription_id == "old"
    assert isinstance(late, ValidEvent) and late.subscription_id == "new"


T0 = datetime(2026, 11, 2, tzinfo=UTC)


def ev(key: str, minutes: int, value: str | None = None, unique: str | None = None) -> StoredEvent:
    return StoredEvent(
        key, T0 + timedelta(minutes=minutes), Decimal(value) if value else None, unique
    )


def test_fold_semantics_per_aggregation() -> None:
    events = [ev("a", 3, "2.5", "ann"), ev("b", 1, "7", "bob"), ev("c", 3, "1", "ann")]
    assert fold(Aggregation.COUNT, events).value == 3
    assert fold(Aggregation.SUM, events).value == Decimal("10.5")
    assert fold(Aggregation.MAX, events).value == 7
    assert fold(Aggregation.UNIQUE_COUNT, events).value == 2
    # latest: greatest time, then greatest key ("c" > "a" at minute 3)
    latest = fold(Aggregation.LATEST, events)
    assert (latest.value, latest.latest_key) == (1, "c")
    assert fold(Aggregation.SUM, []) == AggregateState()


keys = st.sampled_from([f"k{i}" for i in range(12)])
raw_events = st.lists(
    st.builds(
        lambda key, minutes, value, unique: ev(key, minutes, str(value), unique),
        keys,
        st.integers(min_value=0, max_value=5),
        st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False),
        st.sampled_from(["ann", "bob", "cy", "dee"]),
    ),
    max_size=40,
)


def split(events: list[StoredEvent], cuts: list[int]) -> list[list[StoredEvent]]:
    points = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    return [events[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300)
@given(
    aggregation=st.sampled_from(list(Aggregation)),
    events=raw_events,
    cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=6),
)
def test_any_batches_with_duplicates_aggregate_like_the_distinct_events(
    aggregation: Aggregation, events: list[StoredEvent], cuts: list[int]
) -> None:
    # The model: the first event with a key is the one stored; later ones are
    # duplicates, whatever batch they arrive in.
    distinct: dict[str, StoredEvent] = {}
    for e in events:
        distinct.setdefault(e.idempotency_key, e)
    expected = fold(aggregation, distinct.values())

    # The system: batch by batch, only events whose key is new are merged into
    # the stored aggregate (as the ON CONFLICT DO NOTHING RETURNING rows are).
    stored: set[str] = set()
    state = AggregateState()
    for batch in split(events, cuts):
        new: list[StoredEvent] = []
        for e in batch:
            if e.idempotency_key not in stored:
                stored.add(e.idempotency_key)
                new.append(e)
        state = fold_into(state, aggregation, new)
    assert (state.value, state.event_count) == (expected.value, expected.event_count)


@settings(max_examples=200)
@given(aggregation=st.sampled_from(list(Aggregation)), events=raw_events, data=st.data())
def test_aggregate_does_not_depend_on_arrival_order(
    aggregation: Aggregation, events: list[StoredEvent], data: st.DataObject
) -> None:
    distinct = list({e.idempotency_key: e for e in events}.values())
    shuffled = data.draw(st.permutations(distinct))
    assert fold(aggregation, shuffled).value == fold(aggregation, distinct).value
