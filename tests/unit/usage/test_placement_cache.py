"""PlacementCache answers exactly what resolve_subscription answers, event by event."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.usage.domain import (
    PeriodView,
    PlacementCache,
    SubscriptionState,
    SubscriptionView,
    resolve_subscription,
)

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _subscription(
    sub_id: str, org: str, state: SubscriptionState, bounds: list[int], last_closed: bool
) -> SubscriptionView:
    """Periods between consecutive day offsets; all but the last closed."""
    days = sorted(set(bounds))
    periods = tuple(
        PeriodView(T0 + a * DAY, T0 + b * DAY, closed=(i < len(days) - 2 or last_closed))
        for i, (a, b) in enumerate(itertools.pairwise(days))
    )
    return SubscriptionView(
        sub_id,
        org,
        state,
        periods,
        pause_time=T0 + 40 * DAY if state is SubscriptionState.PAUSED else None,
        end_time=T0 + 45 * DAY if state is SubscriptionState.CANCELED else None,
    )


subscriptions = st.lists(
    st.builds(
        _subscription,
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from(["org-a", "org-b"]),
        st.sampled_from(list(SubscriptionState)),
        st.lists(st.integers(0, 90), min_size=0, max_size=5),
        st.booleans(),
    ),
    max_size=4,
    unique_by=lambda s: s.subscription_id,
)
events = st.lists(
    st.tuples(
        st.sampled_from(["org-a", "org-b"]),
        st.sampled_from(["", "s1", "s2", "s3"]),
        st.integers(-5 * 24, 100 * 24).map(lambda h: T0 + timedelta(hours=h)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subscriptions, events)
def test_cache_agrees_with_resolving_each_event(
    subs: list[SubscriptionView], batch: list[tuple[str, str, datetime]]
) -> None:
    by_id = {s.subscription_id: s for s in subs}
    by_org: dict[str, list[SubscriptionView]] = {}
    for s in subs:
        by_org.setdefault(s.org_id, []).append(s)
    cache = PlacementCache(by_id, by_org)
    for org, sub_id, at in batch:
        assert cache.resolve(org, sub_id, at) == resolve_subscription(
            org, sub_id, at, by_id, by_org
        )


def test_a_later_event_past_the_cached_period_moves_to_the_next_one() -> None:
    first = PeriodView(T0, T0 + 30 * DAY, closed=True)
    second = PeriodView(T0 + 30 * DAY, T0 + 61 * DAY)
    sub = SubscriptionView("s1", "org-a", SubscriptionState.ACTIVE, (first, second))
    cache = PlacementCache({"s1": sub}, {"org-a": [sub]})

    inside = cache.resolve("org-a", "", T0 + 35 * DAY)
    late = cache.resolve("org-a", "", T0 + 70 * DAY)  # after the open period's end: still it
    closed = cache.resolve("org-a", "", T0 + 5 * DAY)

    assert getattr(inside, "period", None) == second
    assert getattr(late, "period", None) == second
    assert getattr(closed, "reason", None) is not None  # the closed period is refused
