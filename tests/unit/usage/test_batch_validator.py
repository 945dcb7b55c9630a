"""BatchValidator answers exactly what validate_event answers, event by event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.usage.domain import (
    BatchValidator,
    IncomingEvent,
    PeriodView,
    RejectionReason,
    SubscriptionState,
    SubscriptionView,
    ValidEvent,
    validate_event,
)
from tests.support.usage_views import METRICS

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOW = T0 + 50 * DAY

# Periods of any length, open or closed, possibly overlapping: every window shape.
periods = st.lists(
    st.builds(
        lambda start, days, closed: PeriodView(T0 + start * DAY, T0 + (start + days) * DAY, closed),
        st.integers(0, 60),
        st.integers(1, 40),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
).map(lambda ps: tuple(sorted(ps, key=lambda p: p.start)))
instants = st.none() | st.integers(0, 90).map(lambda d: T0 + d * DAY)
subscriptions = st.lists(
    st.builds(
        SubscriptionView,
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from(["org-a", "org-b"]),
        st.sampled_from(list(SubscriptionState)),
        periods,
        instants,
        instants,
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda s: s.subscription_id,
)
times = (
    st.none()
    | st.integers(-5 * 24, 100 * 24).map(lambda h: T0 + timedelta(hours=h))
    | st.integers(-600, 600).map(lambda s: NOW + timedelta(seconds=s))
)
# Mostly valid fields, so that most events repeat a group (org, metric,
# subscription id) already placed and take the fast path; the rest are there
# to be rejected.
keys = st.sampled_from(["k1", "k2", "k3", "k4", "k5", "k6", "", "x" * 129])
values = st.sampled_from(["1", "2.5", "7", "0.125", "", "-1", "abc"])
properties: st.SearchStrategy[dict[str, str]] = st.sampled_from(
    [{"user_id": "ann"}, {"user_id": "bob", "bytes": "3"}, {"bytes": "4"}, {}]
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[SubscriptionView], list[IncomingEvent]]:
    subs = draw(subscriptions)
    named = st.sampled_from([(s.org_id, s.subscription_id) for s in subs])
    by_org = named.map(lambda pair: (pair[0], ""))
    groups = draw(
        st.lists(
            st.tuples(
                st.one_of(named, by_org, named, st.just(("org-b", "s1"))),
                st.sampled_from([*METRICS, "calls", "calls", "unknown"]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    events = st.builds(
        lambda group, key, value, at, props: IncomingEvent(
            group[0][0], group[1], key, value, at, group[0][1], props
        ),
        st.sampled_from(groups),
        keys,
        values,
        times,
        properties,
    )
    return subs, draw(st.lists(events, min_size=20, max_size=60))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_batch_validator_agrees_with_validating_each_event(
    scenario: tuple[list[SubscriptionView], list[IncomingEvent]],
) -> None:
    subs, batch = scenario
    by_id = {s.subscription_id: s for s in subs}
    by_org: dict[str, list[SubscriptionView]] = {}
    for s in subs:
        by_org.setdefault(s.org_id, []).append(s)
    validator = BatchValidator(
        now=NOW, metrics=METRICS, subscriptions_by_id=by_id, subscriptions_by_org=by_org
    )
    for event in batch:
        assert validator.validate(event) == validate_event(
            event, now=NOW, metrics=METRICS, subscriptions_by_id=by_id, subscriptions_by_org=by_org
        )


def test_events_of_a_known_group_outside_its_window_are_placed_anew() -> None:
    first = PeriodView(T0, T0 + 30 * DAY)  # open, but not the latest: its window ends
    second = PeriodView(T0 + 40 * DAY, T0 + 61 * DAY)
    sub = SubscriptionView("s1", "org-a", SubscriptionState.ACTIVE, (first, second))
    validator = BatchValidator(
        now=NOW, metrics=METRICS, subscriptions_by_id={"s1": sub}, subscriptions_by_org={}
    )

    def at(moment: datetime) -> ValidEvent | object:
        return validator.validate(IncomingEvent("org-a", "calls", "k", "", moment, "s1"))

    inside = at(T0 + 10 * DAY)
    again = at(T0 + 20 * DAY)  # from the learned group
    in_the_gap = at(T0 + 35 * DAY)
    later = at(T0 + 45 * DAY)
    future = at(NOW + timedelta(minutes=6))

    assert isinstance(inside, ValidEvent) and inside.period_start == first.start
    assert isinstance(again, ValidEvent) and again.event_time == T0 + 20 * DAY
    assert getattr(in_the_gap, "reason", None) is RejectionReason.NO_ACTIVE_SUBSCRIPTION
    assert isinstance(later, ValidEvent) and later.period_start == second.start
    assert getattr(future, "reason", None) is RejectionReason.FUTURE_TIMESTAMP
