"""Calendar arithmetic and base-fee proration. Pure Python.

Proration is to the second (``rating.prorate``): ``fee x seconds_used /
seconds_in_period`` where ``seconds_in_period`` is the whole interval the
period belongs to (so a first, partial calendar period pays only its part).
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from services.invoicing.domain.values import Interval
from services.invoicing.rating import prorate, seconds_between

__all__ = ["minus_interval", "nominal_seconds", "plus_interval", "prorate", "seconds_between"]


def minus_interval(end: datetime, interval: Interval) -> datetime:
    """The instant one interval before ``end`` (month ends clamped)."""
    if interval is Interval.WEEKLY:
        return end - timedelta(days=7)
    months = 1 if interval is Interval.MONTHLY else 12
    year, month = divmod(end.year * 12 + (end.month - 1) - months, 12)
    day = min(end.day, calendar.monthrange(year, month + 1)[1])
    return end.replace(year=year, month=month + 1, day=day)


def nominal_seconds(period_start: datetime, period_end: datetime, interval: Interval) -> int:
    """Seconds of the whole interval a period belongs to: the period itself when
    it is one full interval (anniversary months of any length included), else
    the interval ending at its end (a first, partial calendar period)."""
    if plus_interval(period_start, interval) == period_end:
        return seconds_between(period_start, period_end)
    return seconds_between(minus_interval(period_end, interval), period_end)


def plus_interval(start: datetime, interval: Interval) -> datetime:
    """The instant one interval after ``start`` (month ends clamped)."""
    if interval is Interval.WEEKLY:
        return start + timedelta(days=7)
    months = 1 if interval is Interval.MONTHLY else 12
    year, month = divmod(start.year * 12 + (start.month - 1) + months, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return start.replace(year=year, month=month + 1, day=day)
