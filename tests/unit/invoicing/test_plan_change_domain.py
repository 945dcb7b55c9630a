"""The pure pieces a plan change and its quote share: the lines an immediate
change invoices at once, and the open period its close will report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

from services.invoicing import domain as d

APR, MAY, JUN = (datetime(2027, m, 1, tzinfo=UTC) for m in (4, 5, 6))
DAY = 86_400


def plan(vid: str, fee: str, *, in_advance: bool = True) -> d.Plan:
    return d.Plan(vid, vid, vid.title(), "USD", d.Interval.MONTHLY, Decimal(fee), in_advance, 0)


def ids() -> Callable[[], str]:
    n = count()
    return lambda: f"il_{next(n)}"


def advance(p: d.Plan, start: datetime, end: datetime) -> d.Line:
    secs = int((end - start).total_seconds())
    return d.Line(
        "x",
        d.LineKind.BASE_FEE,
        "",
        0,
        p.base_fee,
        package_version_id=p.package_version_id,
        period_start=start,
        period_end=end,
        seconds_used=secs,
        seconds_in_period=secs,
    )


def test_an_upgrade_credits_the_unused_advance_and_bills_the_rest() -> None:
    old, new = plan("basic", "10"), plan("pro", "30")
    at = APR + timedelta(days=10)
    lines = d.plan_change_lines(
        old,
        new,
        [advance(old, APR, MAY)],
        at,
        APR,
        MAY,
        None,
        "USD",
        ids(),
    )
    assert [(li.kind, li.amount_minor, li.seconds_used) for li in lines] == [
        (d.LineKind.PRORATION_CREDIT, -667, 20 * DAY),
        (d.LineKind.BASE_FEE, 2000, 20 * DAY),
    ]
    assert all((li.period_start, li.period_end) == (at, MAY) for li in lines)


def test_a_trial_outlasting_the_period_bills_nothing_now() -> None:
    lines = d.plan_change_lines(
        plan("basic", "10"),
        plan("pro", "30"),
        [],
        APR + timedelta(days=3),
        APR,
        MAY,
        MAY + timedelta(days=5),
        "USD",
        ids(),
    )
    assert lines == []


def test_arrears_versions_bill_nothing_now() -> None:
    lines = d.plan_change_lines(
        plan("a", "10", in_advance=False),
        plan("b", "30", in_advance=False),
        [],
        APR + timedelta(days=3),
        APR,
        MAY,
        None,
        "USD",
        ids(),
    )
    assert lines == []


def test_the_open_period_as_its_close_reports_it() -> None:
    at = APR + timedelta(days=10)
    trial_end = APR + timedelta(days=5)
    period = d.open_period(
        APR,
        MAY,
        "pro",
        [(at, "basic", "pro")],
        trial_end,
        d.Interval.MONTHLY,
        next_version_id="pro",
    )
    assert [(s.package_version_id, s.kind, s.start, s.end) for s in period.segments] == [
        ("basic", d.SegmentKind.TRIAL, APR, trial_end),
        ("basic", d.SegmentKind.ACTIVE, trial_end, at),
        ("pro", d.SegmentKind.ACTIVE, at, MAY),
    ]
    assert (period.next_start, period.next_end, period.next_kind) == (
        MAY,
        JUN,
        d.SegmentKind.ACTIVE,
    )
    ended = d.open_period(APR, MAY, "pro", [], None, d.Interval.MONTHLY, next_version_id=None)
    assert ended.ended and ended.next_start is None and ended.next_version_id == ""


def test_a_trial_outlasting_the_period_starts_the_next_in_trial() -> None:
    for trial_end, kind in (
        (MAY, d.SegmentKind.ACTIVE),
        (MAY + timedelta(seconds=1), d.SegmentKind.TRIAL),
    ):
        period = d.open_period(
            APR, MAY, "pro", [], trial_end, d.Interval.MONTHLY, next_version_id="pro"
        )
        assert period.next_kind is kind


def test_fees_within_keeps_the_fee_lines_inside_the_period() -> None:
    p = plan("basic", "10")
    inside, after = advance(p, APR, MAY), advance(p, MAY, JUN)
    tax = d.Line("t", d.LineKind.TAX, "", 1, Decimal(1), period_start=APR, period_end=MAY)
    assert d.fees_within([inside, after, tax], APR, MAY) == [inside]
