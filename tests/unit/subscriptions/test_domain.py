"""The subscriptions domain, pure: transitions, periods, proration instants,
upgrade/downgrade decisions, schedules, the clock's rollover and entitlements."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kit.errors import FailedPrecondition, InvalidArgument
from services.subscriptions import domain as d


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def plan(
    vid: str = "v-basic",
    fee: str = "10",
    interval: d.Interval = d.Interval.MONTHLY,
    currency: str = "USD",
    trial_days: int = 0,
) -> d.Plan:
    return d.Plan(
        vid, f"p-{vid}", vid.removeprefix("v-"), 1, currency, interval, Decimal(fee), trial_days
    )


BASIC, PRO, STARTER = plan(), plan("v-pro", "30"), plan("v-starter", "5")
PLANS = {p.package_version_id: p for p in (BASIC, PRO, STARTER)}


JAN_15 = datetime(2026, 1, 15, 12, tzinfo=UTC)


def new(
    start: datetime = JAN_15,
    anchor: d.Anchor = d.Anchor.CALENDAR,
    p: d.Plan = BASIC,
    trial_days: int | None = None,
    now: datetime | None = None,
) -> d.Subscription:
    return d.Subscription.create(
        subscription_id="s1",
        org_id="o1",
        plan=p,
        anchor=anchor,
        start=start,
        now=now or start,
        trial_days=trial_days,
    )


def in_state(state: d.State) -> d.Subscription:
    now = at(2026, 1, 20)
    sub = new(trial_days=7 if state is d.State.TRIALING else None)
    if state is d.State.PAUSED:
        sub.pause(now)
    elif state is d.State.PAST_DUE:
        sub.payment_failed_finally(now)
    elif state is d.State.CANCELED:
        sub.cancel(d.Timing.IMMEDIATE, now, "", "x")
    sub.events.clear()
    return sub


# ------------------------------------------------------------ periods


@pytest.mark.parametrize(
    ("start", "anchor", "interval", "end"),
    [
        (at(2026, 1, 15, 12), d.Anchor.CALENDAR, d.Interval.MONTHLY, at(2026, 2, 1)),
        (at(2026, 2, 1), d.Anchor.CALENDAR, d.Interval.MONTHLY, at(2026, 3, 1)),
        (at(2026, 12, 31, 23), d.Anchor.CALENDAR, d.Interval.MONTHLY, at(2027, 1, 1)),
        (at(2026, 3, 4), d.Anchor.CALENDAR, d.Interval.YEARLY, at(2027, 1, 1)),
        (at(2026, 11, 26), d.Anchor.CALENDAR, d.Interval.WEEKLY, at(2026, 11, 30)),  # a Monday
        (at(2026, 1, 31, 8), d.Anchor.ANNIVERSARY, d.Interval.MONTHLY, at(2026, 2, 28, 8)),
        (at(2024, 1, 31), d.Anchor.ANNIVERSARY, d.Interval.MONTHLY, at(2024, 2, 29)),
        (at(2024, 2, 29), d.Anchor.ANNIVERSARY, d.Interval.YEARLY, at(2025, 2, 28)),
        (at(2026, 1, 15), d.Anchor.ANNIVERSARY, d.Interval.WEEKLY, at(2026, 1, 22)),
    ],
)
def test_first_period(
    start: datetime, anchor: d.Anchor, interval: d.Interval, end: datetime
) -> None:
    sub = new(start, anchor, plan(interval=interval))
    assert (sub.period_start, sub.period_end) == (start, end)


def test_anniversary_on_the_31st_does_not_drift() -> None:
    origin = at(2026, 1, 31, 10)
    ends = [d.add_intervals(origin, d.Interval.MONTHLY, k) for k in range(1, 5)]
    assert ends == [
        at(2026, 2, 28, 10),
        at(2026, 3, 31, 10),
        at(2026, 4, 30, 10),
        at(2026, 5, 31, 10),
    ]
    # Rolling over period by period gives the same boundaries.
    sub = new(origin, d.Anchor.ANNIVERSARY)
    sub.advance(at(2026, 5, 31, 10), PLANS)
    assert (sub.period_start, sub.period_end) == (at(2026, 5, 31, 10), at(2026, 6, 30, 10))


def test_leap_year_anniversary() -> None:
    origin = at(2024, 2, 29)
    assert [d.add_intervals(origin, d.Interval.YEARLY, k) for k in range(5)] == [
        at(2024, 2, 29),
        at(2025, 2, 28),
        at(2026, 2, 28),
        at(2027, 2, 28),
        at(2028, 2, 29),
    ]


@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    interval=st.sampled_from(list(d.Interval)),
    anchor=st.sampled_from(list(d.Anchor)),
)
def test_consecutive_periods_tile_time(
    start: datetime, interval: d.Interval, anchor: d.Anchor
) -> None:
    start = start.replace(tzinfo=UTC)
    sub = new(start, anchor, plan(interval=interval))
    bounds = [(sub.period_start, sub.period_end)]
    for _ in range(14):
        sub.advance(sub.period_end, PLANS)
        bounds.append((sub.period_start, sub.period_end))
    for (s1, e1), (s2, e2) in itertools.pairwise(bounds):
        assert s1 < e1 == s2 < e2  # no gap, no overlap
        assert e2 - s2 <= timedelta(days=366)
    if anchor is d.Anchor.CALENDAR:
        for s, _ in bounds[1:]:
            assert (s.hour, s.minute, s.second) == (0, 0, 0)
            if interval is d.Interval.MONTHLY:
                assert s.day == 1
            if interval is d.Interval.WEEKLY:
                assert s.weekday() == 0


@given(
    origin=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    after=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)),
    interval=st.sampled_from(list(d.Interval)),
)
def test_next_boundary_is_the_first_after(
    origin: datetime, after: datetime, interval: d.Interval
) -> None:
    origin, after = origin.replace(tzinfo=UTC), after.replace(tzinfo=UTC)
    b = d.next_boundary(origin, interval, after)
    assert b > after
    # the boundary before it is not after `after`
    k = 0
    while d.add_intervals(origin, interval, k) != b:
        k += 1 if d.add_intervals(origin, interval, k) < b else -1
    assert d.add_intervals(origin, interval, k - 1) <= after


# ------------------------------------------------------------ transitions

LEGAL = {
    (d.State.TRIALING, d.State.ACTIVE),
    (d.State.TRIALING, d.State.CANCELED),
    (d.State.ACTIVE, d.State.PAST_DUE),
    (d.State.ACTIVE, d.State.PAUSED),
    (d.State.ACTIVE, d.State.CANCELED),
    (d.State.PAST_DUE, d.State.ACTIVE),
    (d.State.PAST_DUE, d.State.CANCELED),
    (d.State.PAUSED, d.State.ACTIVE),
}


def test_transition_table_is_exactly_the_spec() -> None:
    table = {(a, b) for a, targets in d.TRANSITIONS.items() for b in targets}
    assert table == LEGAL


@pytest.mark.parametrize("state", list(d.State))
def test_pause(state: d.State) -> None:
    sub = in_state(state)
    if (state, d.State.PAUSED) in LEGAL:
        sub.pause(at(2026, 1, 21))
        assert sub.state is d.State.PAUSED
        assert isinstance(sub.events[-1], d.Paused)
    else:
        with pytest.raises(FailedPrecondition) as caught:
            sub.pause(at(2026, 1, 21))
        assert caught.value.reason == "ILLEGAL_STATE_TRANSITION"
        assert caught.value.metadata["current_state"] == state.value
        assert state.value in caught.value.message


@pytest.mark.parametrize("state", list(d.State))
def test_resume(state: d.State) -> None:
    sub = in_state(state)
    if state is d.State.PAUSED:
        sub.resume(at(2026, 1, 21))
        assert sub.state is d.State.ACTIVE
        assert sub.pause_time is None
    else:
        with pytest.raises(FailedPrecondition) as caught:
            sub.resume(at(2026, 1, 21))
        assert caught.value.metadata["current_state"] == state.value


@pytest.mark.parametrize("state", list(d.State))
def test_cancel_now(state: d.State) -> None:
    sub = in_state(state)
    if (state, d.State.CANCELED) in LEGAL:
        sub.cancel(d.Timing.IMMEDIATE, at(2026, 1, 21), "r", "x")
        assert sub.state is d.State.CANCELED
        assert [type(e) for e in sub.events] == [d.PeriodClosed, d.Canceled]
    else:
        with pytest.raises(FailedPrecondition) as caught:
            sub.cancel(d.Timing.IMMEDIATE, at(2026, 1, 21), "r", "x")
        assert caught.value.metadata["current_state"] == state.value


@pytest.mark.parametrize("state", list(d.State))
def test_payment_outcomes(state: d.State) -> None:
    sub = in_state(state)
    assert sub.payment_failed_finally(at(2026, 1, 21)) is (state is d.State.ACTIVE)
    sub = in_state(state)
    assert sub.payment_succeeded(at(2026, 1, 21)) is (state is d.State.PAST_DUE)
    if state is d.State.PAST_DUE:
        assert sub.state is d.State.ACTIVE


def test_trial_ends_at_its_instant_and_becomes_active() -> None:
    sub = new(at(2026, 1, 10), trial_days=14)
    assert sub.state is d.State.TRIALING
    result = sub.advance(at(2026, 1, 24), PLANS)
    assert result.trials_ended == 1 and sub.state is d.State.ACTIVE
    assert [(s.kind, s.start, s.end) for s in sub.segments()] == [
        (d.Kind.TRIAL, at(2026, 1, 10), at(2026, 1, 24)),
        (d.Kind.ACTIVE, at(2026, 1, 24), at(2026, 2, 1)),
    ]


def test_trial_longer_than_the_period_continues_into_the_next() -> None:
    sub = new(at(2026, 1, 25), trial_days=14)
    result = sub.advance(at(2026, 2, 1), PLANS)
    assert (len(result.closed), result.trials_ended) == (1, 0)
    closed = next(e for e in sub.events if isinstance(e, d.PeriodClosed))
    assert closed.next_kind is d.Kind.TRIAL
    result = sub.advance(at(2026, 2, 8), PLANS)
    assert result.trials_ended == 1


def test_start_in_the_future_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        new(at(2026, 2, 1), now=at(2026, 1, 1))
    assert caught.value.violations[0].field == "start_time"


# ------------------------------------------------------------ plan changes


@pytest.mark.parametrize(
    ("target", "direction", "timing"),
    [
        (PRO, d.Direction.UPGRADE, d.Timing.IMMEDIATE),
        (STARTER, d.Direction.DOWNGRADE, d.Timing.PERIOD_END),
        (plan("v-same", "10"), d.Direction.LATERAL, d.Timing.IMMEDIATE),
    ],
)
def test_automatic_timing(target: d.Plan, direction: d.Direction, timing: d.Timing) -> None:
    assert d.direction_of(BASIC, target) is direction
    assert d.resolve_timing(d.Timing.AUTOMATIC, direction) is timing
    assert d.resolve_timing(d.Timing.IMMEDIATE, direction) is d.Timing.IMMEDIATE


def test_price_per_day_compares_across_intervals() -> None:
    yearly = plan("v-yearly", "100", d.Interval.YEARLY)
    assert d.direction_of(BASIC, yearly) is d.Direction.DOWNGRADE  # 100/yr < 10/mo


def test_immediate_change_records_the_exact_instant() -> None:
    sub = new(at(2026, 1, 1))
    instant = at(2026, 1, 11, 6, 30, 15)
    direction, timing, effective, entry = sub.change_plan(PRO, d.Timing.AUTOMATIC, instant, "x")
    assert (direction, timing, effective, entry) == (
        d.Direction.UPGRADE,
        d.Timing.IMMEDIATE,
        instant,
        None,
    )
    assert sub.plan is PRO
    assert [(s.package_version_id, s.start, s.end) for s in sub.segments()] == [
        ("v-basic", at(2026, 1, 1), instant),
        ("v-pro", instant, at(2026, 2, 1)),
    ]
    changed = sub.events[-1]
    assert isinstance(changed, d.Changed)
    assert (changed.previous_package_version_id, changed.effective_time) == ("v-basic", instant)
    # Two changes at one instant leave one segment, not a zero-length one.
    sub.change_plan(STARTER, d.Timing.IMMEDIATE, instant, "y")
    assert [s.package_version_id for s in sub.segments()] == ["v-basic", "v-starter"]


def test_period_end_change_applies_at_rollover() -> None:
    sub = new(at(2026, 1, 1))
    _, timing, effective, entry = sub.change_plan(STARTER, d.Timing.AUTOMATIC, at(2026, 1, 5), "e1")
    assert timing is d.Timing.PERIOD_END and effective == at(2026, 2, 1)
    assert entry is not None and sub.plan is BASIC
    sub.events.clear()
    result = sub.advance(at(2026, 2, 1), PLANS)
    assert result.schedules_applied == 1
    assert sub.plan is STARTER and sub.schedules == []
    assert [type(e) for e in sub.events] == [d.PeriodClosed, d.Changed, d.Renewed]
    closed = sub.events[0]
    assert isinstance(closed, d.PeriodClosed)
    assert closed.period.package_version_id == "v-basic"
    assert closed.next_package_version_id == "v-starter"
    assert [r.state for r in sub.resolved] == [d.ScheduleState.APPLIED]


def test_newer_change_withdraws_the_pending_one() -> None:
    sub = new(at(2026, 1, 1))
    sub.change_plan(STARTER, d.Timing.PERIOD_END, at(2026, 1, 5), "e1")
    sub.change_plan(PRO, d.Timing.IMMEDIATE, at(2026, 1, 6), "e2")
    assert sub.schedules == []
    assert [(r.schedule_id, r.state) for r in sub.resolved] == [("e1", d.ScheduleState.CANCELED)]


@pytest.mark.parametrize(
    ("target", "reason"),
    [(BASIC, "PLAN_UNCHANGED"), (plan("v-eur", currency="EUR"), "PLAN_INCOMPATIBLE")],
)
def test_change_refused(target: d.Plan, reason: str) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        new().change_plan(target, d.Timing.AUTOMATIC, at(2026, 1, 20), "x")
    assert caught.value.reason == reason


@pytest.mark.parametrize("state", [d.State.PAUSED, d.State.CANCELED])
def test_change_refused_in_state(state: d.State) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        in_state(state).change_plan(PRO, d.Timing.AUTOMATIC, at(2026, 1, 21), "x")
    assert caught.value.reason == "SUBSCRIPTION_NOT_CHANGEABLE"
    assert caught.value.metadata["current_state"] == state.value


# ------------------------------------------------------------ cancellation and the clock


def test_cancel_at_period_end_then_rollover() -> None:
    sub = new(at(2026, 1, 1))
    effective = sub.cancel(d.Timing.PERIOD_END, at(2026, 1, 10), "bye", "c1")
    assert effective == at(2026, 2, 1) and sub.cancel_at_period_end
    assert sub.cancel(d.Timing.PERIOD_END, at(2026, 1, 11), "again", "c2") == effective
    assert len(sub.schedules) == 1
    sub.events.clear()
    result = sub.advance(at(2026, 3, 15), PLANS)
    assert len(result.closed) == 1 and sub.state is d.State.CANCELED
    assert [type(e) for e in sub.events] == [d.PeriodClosed, d.Canceled]
    closed, canceled = sub.events
    assert isinstance(closed, d.PeriodClosed) and closed.ended and closed.next_start is None
    assert isinstance(canceled, d.Canceled) and canceled.effective_time == at(2026, 2, 1)
    assert canceled.reason == "bye"


def test_scheduled_cancellation_applies_even_if_paused_since() -> None:
    sub = new(at(2026, 1, 1))
    sub.cancel(d.Timing.PERIOD_END, at(2026, 1, 10), "", "c1")
    sub.pause(at(2026, 1, 12))
    sub.advance(at(2026, 2, 1), PLANS)
    assert sub.state is d.State.CANCELED


def test_withdrawing_the_cancellation() -> None:
    sub = new(at(2026, 1, 1))
    sub.cancel(d.Timing.PERIOD_END, at(2026, 1, 10), "", "c1")
    entry = sub.withdraw_schedule("c1", at(2026, 1, 11))
    assert entry.state is d.ScheduleState.CANCELED
    assert not sub.cancel_at_period_end and sub.cancel_time is None
    with pytest.raises(FailedPrecondition) as caught:
        sub.withdraw_schedule("c1", at(2026, 1, 12))
    assert caught.value.reason == "SCHEDULE_NOT_PENDING"


def test_immediate_cancel_closes_the_final_period_at_the_instant() -> None:
    sub = new(at(2026, 1, 1))
    sub.pause(at(2026, 1, 10))
    sub.resume(at(2026, 1, 15))
    sub.events.clear()
    sub.cancel(d.Timing.IMMEDIATE, at(2026, 1, 20), "", "x")
    closed = sub.events[0]
    assert isinstance(closed, d.PeriodClosed)
    assert (closed.period.start, closed.period.end) == (at(2026, 1, 1), at(2026, 2, 1))
    assert [(s.kind, s.start, s.end) for s in closed.period.segments] == [
        (d.Kind.ACTIVE, at(2026, 1, 1), at(2026, 1, 10)),
        (d.Kind.PAUSED, at(2026, 1, 10), at(2026, 1, 15)),
        (d.Kind.ACTIVE, at(2026, 1, 15), at(2026, 1, 20)),
    ]
    # Nothing more to close, ever.
    assert sub.advance(at(2027, 1, 1), PLANS).closed == []


def test_paused_periods_still_roll_with_paused_segments() -> None:
    sub = new(at(2026, 1, 1))
    sub.pause(at(2026, 1, 20))
    sub.advance(at(2026, 3, 1), PLANS)
    closes = [e for e in sub.events if isinstance(e, d.PeriodClosed)]
    assert [[s.kind for s in c.period.segments] for c in closes] == [
        [d.Kind.ACTIVE, d.Kind.PAUSED],
        [d.Kind.PAUSED],
    ]


def test_advance_respects_max_periods_and_is_idempotent() -> None:
    sub = new(at(2026, 1, 1))
    first = sub.advance(at(2026, 6, 1), PLANS, max_periods=2)
    assert len(first.closed) == 2 and first.more_due
    rest = sub.advance(at(2026, 6, 1), PLANS)
    assert len(rest.closed) == 3 and not rest.more_due
    assert sub.advance(at(2026, 6, 1), PLANS).closed == []


def test_segments_of_clips_to_the_period() -> None:
    marks = [
        d.Mark(at(2025, 12, 20), "v1", d.Kind.ACTIVE),
        d.Mark(at(2026, 1, 10), "v2", d.Kind.ACTIVE),
        d.Mark(at(2026, 1, 20), "v2", d.Kind.ENDED),
    ]
    assert d.segments_of(marks, at(2026, 1, 1), at(2026, 2, 1)) == (
        d.Segment("v1", d.Kind.ACTIVE, at(2026, 1, 1), at(2026, 1, 10)),
        d.Segment("v2", d.Kind.ACTIVE, at(2026, 1, 10), at(2026, 1, 20)),
    )


# ------------------------------------------------------------ entitlements

METERED = d.FeatureLimit("api_calls", False, Decimal(100), True, True, "api_calls")
SEATS = d.FeatureLimit("seats", False, Decimal(5), False, False, "")
SSO = d.FeatureLimit("sso", True, None, True, False, "")


@pytest.mark.parametrize(
    ("limit", "used", "quantity", "allowed", "reason", "remaining"),
    [
        (METERED, "0", None, True, d.EntitlementReason.WITHIN_LIMIT, "100"),
        (METERED, "99", None, True, d.EntitlementReason.WITHIN_LIMIT, "1"),
        (METERED, "100", None, False, d.EntitlementReason.HARD_LIMIT_EXCEEDED, "0"),
        (METERED, "90", "11", False, d.EntitlementReason.HARD_LIMIT_EXCEEDED, "10"),
        (METERED, "150", "0", False, d.EntitlementReason.HARD_LIMIT_EXCEEDED, "0"),
        (SEATS, "0", "5", True, d.EntitlementReason.WITHIN_LIMIT, "0"),
        (SEATS, "0", "6", True, d.EntitlementReason.SOFT_LIMIT_EXCEEDED, "0"),
        (SEATS, "0", None, True, d.EntitlementReason.WITHIN_LIMIT, "5"),
    ],
)
def test_decide(
    limit: d.FeatureLimit,
    used: str,
    quantity: str | None,
    allowed: bool,
    reason: d.EntitlementReason,
    remaining: str,
) -> None:
    out = d.decide(
        limit,
        subscribed=True,
        metered_usage=Decimal(used),
        quantity=Decimal(quantity) if quantity is not None else None,
    )
    assert (out.allowed, out.reason, out.remaining) == (allowed, reason, Decimal(remaining))


def test_decide_unlimited_missing_and_unsubscribed() -> None:
    unlimited = d.decide(SSO, subscribed=True, metered_usage=Decimal(0), quantity=None)
    assert unlimited.allowed and unlimited.unlimited and unlimited.remaining is None
    missing = d.decide(None, subscribed=True, metered_usage=Decimal(0), quantity=None)
    assert missing.reason is d.EntitlementReason.FEATURE_NOT_IN_PLAN and not missing.allowed
    nobody = d.decide(SEATS, subscribed=False, metered_usage=Decimal(0), quantity=None)
    assert nobody.reason is d.EntitlementReason.NO_ACTIVE_SUBSCRIPTION
