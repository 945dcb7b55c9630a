"""The invoice aggregate and base-fee proration: pure rules, no I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.invoicing import domain as d
from services.kit.errors import FailedPrecondition

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
JAN = datetime(2027, 1, 1, tzinfo=UTC)
_ids = itertools.count()


def new_id() -> str:
    return f"l{next(_ids)}"


def plan(vid: str, fee: str, *, advance: bool = True) -> d.Plan:
    return d.Plan(vid, vid, vid.title(), "USD", d.Interval.MONTHLY, Decimal(fee), advance, 0)


def closed(
    segments: list[d.Segment], *, next_version: str = "", ended: bool = False
) -> d.ClosedPeriod:
    return d.ClosedPeriod(
        NOV,
        DEC,
        tuple(segments),
        ended,
        None if ended else DEC,
        None if ended else JAN,
        next_version or segments[-1].package_version_id,
        d.SegmentKind.ACTIVE,
    )


def test_nominal_period_and_interval_arithmetic() -> None:
    assert d.minus_interval(datetime(2027, 3, 31, tzinfo=UTC), d.Interval.MONTHLY) == datetime(
        2027, 2, 28, tzinfo=UTC
    )
    assert d.plus_interval(datetime(2027, 1, 31, tzinfo=UTC), d.Interval.MONTHLY) == datetime(
        2027, 2, 28, tzinfo=UTC
    )
    assert d.nominal_seconds(NOV, DEC, d.Interval.MONTHLY) == 30 * 86400
    assert d.nominal_seconds(datetime(2026, 11, 16, tzinfo=UTC), DEC, d.Interval.MONTHLY) == (
        30 * 86400
    )
    assert d.nominal_seconds(JAN, datetime(2028, 1, 1, tzinfo=UTC), d.Interval.YEARLY) == (
        365 * 86400
    )
    # An anniversary period of one interval is whole, however long the month.
    jan31, feb28 = datetime(2027, 1, 31, tzinfo=UTC), datetime(2027, 2, 28, tzinfo=UTC)
    assert d.nominal_seconds(jan31, feb28, d.Interval.MONTHLY) == 28 * 86400


def test_partial_first_period_in_arrears_is_prorated_on_the_nominal_month() -> None:
    start = datetime(2026, 11, 16, tzinfo=UTC)
    period = closed([d.Segment("a", d.SegmentKind.ACTIVE, start, DEC)], ended=True)
    (line,) = d.base_fee_lines(period, {"a": plan("a", "30", advance=False)}, [], "USD", new_id)
    assert line.amount_minor == 1500 and line.unrounded == Decimal(15)
    assert (line.seconds_used, line.seconds_in_period) == (15 * 86400, 30 * 86400)


def test_in_advance_period_without_changes_only_bills_the_next_period() -> None:
    plans = {"a": plan("a", "10")}
    first = d.base_fee_lines(
        closed([d.Segment("a", d.SegmentKind.ACTIVE, NOV, DEC)]), plans, [], "USD", new_id
    )
    advance = [li for li in first if li.period_start == DEC]
    assert [li.amount_minor for li in first] == [1000, 1000]
    later = d.ClosedPeriod(
        DEC,
        JAN,
        (d.Segment("a", d.SegmentKind.ACTIVE, DEC, JAN),),
        False,
        JAN,
        datetime(2027, 2, 1, tzinfo=UTC),
        "a",
        d.SegmentKind.ACTIVE,
    )
    lines = d.base_fee_lines(later, plans, advance, "USD", new_id)
    assert [(li.kind, li.amount_minor) for li in lines] == [(d.LineKind.BASE_FEE, 1000)]


def test_paused_and_trial_segments_pay_nothing() -> None:
    mid = datetime(2026, 11, 11, tzinfo=UTC)
    period = closed(
        [
            d.Segment("a", d.SegmentKind.TRIAL, NOV, mid),
            d.Segment("a", d.SegmentKind.PAUSED, mid, DEC),
        ],
        ended=True,
    )
    assert d.base_fee_lines(period, {"a": plan("a", "30", advance=False)}, [], "USD", new_id) == []


def _invoice(*amounts: int, tax: str = "0") -> d.Invoice:
    inv = d.Invoice(
        "inv",
        "acme-corp",
        "sub",
        d.InvoiceReason.PERIOD_CLOSE,
        "USD",
        NOV,
        DEC,
        NOV,
        tax_rate=Decimal(tax),
    )
    inv.lines = [d.Line(new_id(), d.LineKind.BASE_FEE, "x", a, Decimal(a) / 100) for a in amounts]
    inv.retax(new_id())
    return inv


def test_totals_tax_credit_and_numbering() -> None:
    inv = _invoice(1000, 2345, tax="20")
    assert (inv.subtotal, inv.tax) == (3345, 669)
    consumed = inv.finalize(7, DEC, credit_available=500)
    assert consumed == 500 and inv.total == 3345 + 669 - 500 == inv.amount_due
    assert inv.number == "ACMECORP-000007"
    with pytest.raises(FailedPrecondition) as err:
        inv.finalize(8, DEC, 0)
    assert err.value.reason == "INVOICE_NOT_DRAFT"


def test_negative_gross_finalizes_at_zero_and_paid() -> None:
    inv = _invoice(1000, -1500)
    assert inv.finalize(1, DEC, 0) == 0
    assert inv.total == 0 and inv.state is d.InvoiceState.PAID


def test_state_machine_and_credit_rules() -> None:
    inv = _invoice(3000)
    inv.finalize(1, DEC, 0)
    line = inv.lines[0].line_id
    with pytest.raises(FailedPrecondition) as err:
        inv.plan_credit([(line, 3001)], {}, None)
    assert err.value.reason == "CREDIT_EXCEEDS_REMAINING"
    assert inv.plan_credit([(line, 1000)], {}, None) is d.Settlement.REDUCE_AMOUNT_DUE
    inv.apply_credit(1000, d.Settlement.REDUCE_AMOUNT_DUE, DEC)
    assert inv.amount_due == 2000
    with pytest.raises(FailedPrecondition):
        inv.plan_credit([(line, 2500)], {line: 1000}, None)
    assert inv.pay(2000, "pay_1", DEC) and inv.state is d.InvoiceState.PAID
    with pytest.raises(FailedPrecondition) as err:
        inv.void("x", DEC)
    assert err.value.reason == "INVOICE_ALREADY_PAID"
    assert inv.plan_credit([("", 500)], {}, None) is d.Settlement.CREDIT_BALANCE
    assert inv.plan_credit([("", 500)], {}, d.Settlement.REFUND) is d.Settlement.REFUND
    draft = _invoice(100)
    with pytest.raises(FailedPrecondition) as err:
        draft.void("x", DEC)
    assert err.value.reason == "INVOICE_NOT_FINALIZED"
    with pytest.raises(FailedPrecondition) as err:
        draft.plan_credit([("", 1)], {}, None)
    assert err.value.reason == "INVOICE_NOT_CREDITABLE"


def test_open_period_segments_follow_plan_changes_and_the_trial() -> None:
    a, b, c = datetime(2026, 11, 5, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC), NOV
    S, K = d.Segment, d.SegmentKind
    # No change: one version over the period.
    assert d.open_period_segments(NOV, DEC, "v1", [], None) == (S("v1", K.ACTIVE, NOV, DEC),)
    # Two changes v1 -> v2 -> v3; a change outside the period is ignored.
    changes = [(c, "v0", "v1"), (a, "v1", "v2"), (b, "v2", "v3")]
    assert d.open_period_segments(NOV, DEC, "v3", changes, None) == (
        S("v1", K.ACTIVE, NOV, a),
        S("v2", K.ACTIVE, a, b),
        S("v3", K.ACTIVE, b, DEC),
    )
    # The trial ends on Nov 8: v1 is all trial, v2 is cut, v3 is active.
    trial_end = datetime(2026, 11, 8, tzinfo=UTC)
    assert d.open_period_segments(NOV, DEC, "v3", changes, trial_end) == (
        S("v1", K.TRIAL, NOV, a),
        S("v2", K.TRIAL, a, trial_end),
        S("v2", K.ACTIVE, trial_end, b),
        S("v3", K.ACTIVE, b, DEC),
    )
