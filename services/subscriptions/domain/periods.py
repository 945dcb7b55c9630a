"""Billing period arithmetic: pure, UTC, no I/O.

Every boundary is computed from one origin (``origin + k intervals``) rather
than from the previous boundary, so an anniversary on the 31st goes
Jan 31 -> Feb 28 -> Mar 31 instead of drifting to the 28th for good.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum


class Interval(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


class Anchor(StrEnum):
    CALENDAR = "calendar"
    ANNIVERSARY = "anniversary"


# Calendar periods start on the 1st (monthly), January 1st (yearly) or a
# Monday (weekly) at 00:00 UTC; 2000-01-03 was a Monday.
_CALENDAR_ORIGIN = {
    Interval.WEEKLY: datetime(2000, 1, 3, tzinfo=UTC),
    Interval.MONTHLY: datetime(2000, 1, 1, tzinfo=UTC),
    Interval.YEARLY: datetime(2000, 1, 1, tzinfo=UTC),
}

# Nominal period lengths for comparing plans by price per day; proration
# itself uses the exact seconds of each period.
NOMINAL_DAYS = {
    Interval.WEEKLY: Decimal(7),
    Interval.MONTHLY: Decimal("365.2425") / 12,
    Interval.YEARLY: Decimal("365.2425"),
}


def origin_for(anchor: Anchor, interval: Interval, start: datetime) -> datetime:
    """The instant every boundary of a subscription is counted from."""
    return _CALENDAR_ORIGIN[interval] if anchor is Anchor.CALENDAR else start


def add_intervals(origin: datetime, interval: Interval, k: int) -> datetime:
    """``origin`` plus ``k`` intervals, the day clamped to the month's last day."""
    if interval is Interval.WEEKLY:
        return origin + timedelta(weeks=k)
    months = k * (12 if interval is Interval.YEARLY else 1)
    index = origin.month - 1 + months
    year, month = origin.year + index // 12, index % 12 + 1
    day = min(origin.day, calendar.monthrange(year, month)[1])
    return origin.replace(year=year, month=month, day=day)


def _estimate(origin: datetime, interval: Interval, at: datetime) -> int:
    if interval is Interval.WEEKLY:
        return (at - origin) // timedelta(weeks=1)
    if interval is Interval.MONTHLY:
        return (at.year - origin.year) * 12 + at.month - origin.month
    return at.year - origin.year


def next_boundary(origin: datetime, interval: Interval, after: datetime) -> datetime:
    """The first boundary strictly after ``after``."""
    k = _estimate(origin, interval, after)
    while add_intervals(origin, interval, k) > after:
        k -= 1
    while add_intervals(origin, interval, k) <= after:
        k += 1
    return add_intervals(origin, interval, k)


def price_per_day(base_fee: Decimal, interval: Interval) -> Decimal:
    return base_fee / NOMINAL_DAYS[interval]
