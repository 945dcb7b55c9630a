"""Base-fee lines of a closed period. Pure Python.

Every ACTIVE segment of the closed period owes its version's fee prorated to
the second. What earlier invoices already billed for the period (the
in-advance fee, an immediate plan change's lines) is subtracted per version:
a version with nothing billed pays one line per segment (in arrears); one
that was billed gets a single true-up line (BASE_FEE for seconds owed, or a
PRORATION_CREDIT for seconds billed but not used). In advance, the next
period's fee is invoiced now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.invoicing.domain.invoices import round_to_minor
from services.invoicing.domain.periods import (
    nominal_seconds,
    plus_interval,
    prorate,
    seconds_between,
)
from services.invoicing.domain.values import Interval, Line, LineKind, Plan, Segment, SegmentKind


@dataclass(frozen=True)
class ClosedPeriod:
    period_start: datetime
    period_end: datetime
    segments: tuple[Segment, ...]
    ended: bool
    next_start: datetime | None
    next_end: datetime | None
    next_version_id: str
    next_kind: SegmentKind


def open_period_segments(
    start: datetime,
    end: datetime,
    version_id: str,
    changes: Sequence[tuple[datetime, str, str]],
    trial_end: datetime | None,
) -> tuple[Segment, ...]:
    """The segments the open period [start, end) has so far, as its close will
    report them: one piece per version between the immediate plan changes
    (``changes``: effective time, previous version, new version, oldest first),
    each cut at the trial end. Pauses are not known here (see the docs)."""
    inside = [c for c in changes if start < c[0] < end]
    cuts = [t for t, _, _ in inside]
    versions = [inside[0][1], *(new for _, _, new in inside[:-1])] if inside else []
    # The last piece runs under the version in force now (the projection's).
    versions.append(version_id)
    bounds = [start, *cuts, end]
    out: list[Segment] = []
    for vid, s, e in zip(versions, bounds[:-1], bounds[1:], strict=True):
        if trial_end is not None and trial_end > s:
            cut = min(trial_end, e)
            out.append(Segment(vid, SegmentKind.TRIAL, s, cut))
            if cut < e:
                out.append(Segment(vid, SegmentKind.ACTIVE, cut, e))
        else:
            out.append(Segment(vid, SegmentKind.ACTIVE, s, e))
    return tuple(out)


def open_period(
    start: datetime,
    end: datetime,
    version_id: str,
    changes: Sequence[tuple[datetime, str, str]],
    trial_end: datetime | None,
    interval: Interval,
    *,
    next_version_id: str | None,
) -> ClosedPeriod:
    """The open period as its close will report it if nothing else changes:
    ``open_period_segments``, and the next period (``next_version_id`` None when
    the subscription ends with this one). The next period starts in trial when
    the trial outlasts this one (the clock ends a trial first when it ends at
    or before the period's end). Its end is one interval on: an anniversary
    clamped to a short month (Jan 31 -> Feb 28) comes back to the 31st at the
    close, which bills the same full fee with a later printed end."""
    ended = next_version_id is None
    trial_next = trial_end is not None and trial_end > end
    return ClosedPeriod(
        period_start=start,
        period_end=end,
        segments=open_period_segments(start, end, version_id, changes, trial_end),
        ended=ended,
        next_start=None if ended else end,
        next_end=None if ended else plus_interval(end, interval),
        next_version_id=next_version_id or "",
        next_kind=SegmentKind.TRIAL if trial_next else SegmentKind.ACTIVE,
    )


def fees_within(lines: Sequence[Line], start: datetime, end: datetime) -> list[Line]:
    """The BASE_FEE / PRORATION_CREDIT lines that fall inside ``[start, end]``:
    what a period's close counts as already billed."""
    kinds = (LineKind.BASE_FEE, LineKind.PRORATION_CREDIT)
    return [
        li
        for li in lines
        if li.kind in kinds
        and li.period_start is not None
        and li.period_end is not None
        and li.period_start >= start
        and li.period_end <= end
    ]


def plan_change_lines(
    old: Plan,
    new: Plan,
    billed: Sequence[Line],
    effective: datetime,
    period_start: datetime,
    period_end: datetime,
    trial_end: datetime | None,
    currency: str,
    new_id: Callable[[], str],
) -> list[Line]:
    """What an immediate plan change invoices at once: a credit for the unused
    part the old version was billed in advance for (``billed``: the period's
    fee lines so far), and the new version's in-advance fee for the rest of the
    period, from the trial end while in trial. Arrears-timed versions add
    nothing (the close bills their segments)."""
    t, end = effective, period_end
    lines: list[Line] = []
    paid_old = billed_seconds(billed).get(old.package_version_id, 0)
    credit_secs = min(seconds_between(t, end), paid_old)
    if old.in_advance and old.base_fee != 0 and credit_secs > 0:
        nominal = nominal_seconds(period_start, end, old.interval)
        lines.append(
            _fee_line(
                new_id,
                old,
                t,
                end,
                credit_secs,
                nominal,
                currency,
                kind=LineKind.PRORATION_CREDIT,
                sign=-1,
            )
        )
    active_from = max(t, trial_end) if trial_end else t
    # A trial outlasting the period leaves none of it to bill now.
    secs = seconds_between(active_from, end) if active_from < end else 0
    if new.in_advance and new.base_fee != 0 and secs > 0:
        nominal = nominal_seconds(period_start, end, new.interval)
        lines.append(_fee_line(new_id, new, active_from, end, secs, nominal, currency))
    return lines


def _fee_line(
    new_id: Callable[[], str],
    plan: Plan,
    start: datetime,
    end: datetime,
    used: int,
    nominal: int,
    currency: str,
    *,
    kind: LineKind = LineKind.BASE_FEE,
    sign: int = 1,
) -> Line:
    exact = prorate(plan.base_fee, used, nominal) * sign
    label = "base fee" if kind is LineKind.BASE_FEE else "unused base fee"
    text = f"{plan.name} {label}"
    if used != nominal:
        text += f" (prorated {used}/{nominal} s)"
    return Line(
        line_id=new_id(),
        kind=kind,
        description=text,
        amount_minor=round_to_minor(exact, currency),
        unrounded=exact,
        quantity=Decimal(1),
        unit_amount=plan.base_fee,
        package_version_id=plan.package_version_id,
        period_start=start,
        period_end=end,
        seconds_used=used,
        seconds_in_period=nominal,
        full_amount=plan.base_fee,
    )


def billed_seconds(billed: Sequence[Line]) -> dict[str, int]:
    """Seconds of base fee already invoiced per version (credits subtract)."""
    out: dict[str, int] = {}
    for li in billed:
        if li.kind is LineKind.BASE_FEE:
            out[li.package_version_id] = out.get(li.package_version_id, 0) + li.seconds_used
        elif li.kind is LineKind.PRORATION_CREDIT:
            out[li.package_version_id] = out.get(li.package_version_id, 0) - li.seconds_used
    return out


def base_fee_lines(
    period: ClosedPeriod,
    plans: Mapping[str, Plan],
    billed: Sequence[Line],
    currency: str,
    new_id: Callable[[], str],
) -> list[Line]:
    """``billed``: the BASE_FEE / PRORATION_CREDIT lines of earlier invoices that
    fall inside this period (the advance, an immediate plan change)."""
    charges: list[Line] = []
    credits: list[Line] = []
    paid = billed_seconds(billed)
    order: list[str] = []
    for vid in [s.package_version_id for s in period.segments] + list(paid):
        if vid not in order:
            order.append(vid)
    for vid in order:
        plan = plans.get(vid)
        if plan is None or plan.base_fee == 0:
            continue
        nominal = nominal_seconds(period.period_start, period.period_end, plan.interval)
        active = [
            s
            for s in period.segments
            if s.package_version_id == vid and s.kind is SegmentKind.ACTIVE and s.seconds > 0
        ]
        already = paid.get(vid, 0)
        if already == 0:
            for seg in active:
                charges.append(
                    _fee_line(new_id, plan, seg.start, seg.end, seg.seconds, nominal, currency)
                )
            continue
        delta = sum(s.seconds for s in active) - already
        if delta > 0:
            charges.append(
                _fee_line(
                    new_id, plan, period.period_start, period.period_end, delta, nominal, currency
                )
            )
        elif delta < 0:
            credits.append(
                _fee_line(
                    new_id,
                    plan,
                    period.period_start,
                    period.period_end,
                    -delta,
                    nominal,
                    currency,
                    kind=LineKind.PRORATION_CREDIT,
                    sign=-1,
                )
            )
    lines = charges + credits
    # The next period's fee, in advance.
    nxt = plans.get(period.next_version_id)
    if (
        not period.ended
        and nxt is not None
        and nxt.in_advance
        and nxt.base_fee != 0
        and period.next_kind is SegmentKind.ACTIVE
        and period.next_start is not None
        and period.next_end is not None
    ):
        nominal = nominal_seconds(period.next_start, period.next_end, nxt.interval)
        used = seconds_between(period.next_start, period.next_end)
        lines.append(
            _fee_line(new_id, nxt, period.next_start, period.next_end, used, nominal, currency)
        )
    return lines
