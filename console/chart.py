"""A usage chart as plain numbers for an SVG template (no JavaScript, no charting library).

Pure: the page's handler fetches the buckets, this lays them out, and the
``usage_chart`` macro draws the result. Coordinates are Decimal rounded to a
tenth of a pixel, so the same data always draws the same picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

WIDTH = Decimal(480)
HEIGHT = Decimal(160)
PAD = Decimal(8)
_TENTH = Decimal("0.1")
# Aggregations whose period total is the sum of its buckets: drawn as a running
# total, so the line ends at the figure the limit applies to.
CUMULATIVE = frozenset({"AGGREGATION_COUNT", "AGGREGATION_SUM"})


@dataclass(frozen=True)
class Point:
    x: Decimal
    y: Decimal
    when: datetime
    value: Decimal


@dataclass(frozen=True)
class Chart:
    metric: str
    points: tuple[Point, ...]
    peak: Decimal  # the value at the top of the plot area
    total: Decimal  # the period so far: a running total's end, or a MAX metric's peak
    limit: Decimal | None
    limit_y: Decimal | None
    over_limit: bool
    width: Decimal = WIDTH
    height: Decimal = HEIGHT
    # What the total covers and how a point's time reads (hour buckets need the hour).
    span: str = "this period"
    time_format: str = "%Y-%m-%d"
    limit_note: str = "(no limit)"  # shown without a limit; empty where a limit means nothing

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


def _round(value: Decimal) -> Decimal:
    return value.quantize(_TENTH)


def usage_chart(
    metric: str,
    buckets: Sequence[tuple[datetime, Decimal]],
    aggregation: str,
    limit: Decimal | None = None,
    *,
    running_total: bool = True,
    span: str = "this period",
    time_format: str = "%Y-%m-%d",
    limit_note: str = "(no limit)",
) -> Chart:
    """Lay out ``buckets`` (start, value) in time order, with the limit as a line.

    ``running_total=False`` draws each bucket's own value (the usage page's
    time series); the total is then still the window's figure: the sum of a
    COUNT or SUM metric's buckets.
    """
    cumulative = running_total and aggregation in CUMULATIVE
    values: list[Decimal] = []
    running = Decimal(0)
    for _, value in buckets:
        running = running + value if cumulative else value
        values.append(running)
    highest = max([*values, limit or Decimal(0), Decimal(0)])
    # Headroom above the highest of data and limit; 1 when everything is zero.
    peak = highest * Decimal("1.1") if highest > 0 else Decimal(1)
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = plot_w / (len(values) - 1) if len(values) > 1 else Decimal(0)

    def y_of(value: Decimal) -> Decimal:
        return _round(PAD + plot_h - plot_h * value / peak)

    points = tuple(
        Point(_round(PAD + step * i), y_of(value), when, value)
        for i, ((when, _), value) in enumerate(zip(buckets, values, strict=True))
    )
    # The period's figure: a running total's end, a peak metric's highest bucket.
    if aggregation == "AGGREGATION_MAX":
        total = max(values, default=Decimal(0))
    elif aggregation in CUMULATIVE and not cumulative:
        total = sum(values, Decimal(0))
    else:
        total = values[-1] if values else Decimal(0)
    return Chart(
        metric=metric,
        points=points,
        peak=peak,
        total=total,
        limit=limit,
        limit_y=y_of(limit) if limit is not None else None,
        over_limit=limit is not None and total > limit,
        span=span,
        time_format=time_format,
        limit_note=limit_note,
    )
