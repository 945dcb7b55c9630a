"""The portal's usage analytics: a time series per metric, as a chart, a table and CSV.

The window comes from a range picker (the last 24 hours by the hour, the last
7 days or the current billing period by the day); the buckets are the
gateway's ``usage:query`` answer for the current subscription, shown as they
came (exact decimal strings), so the chart, the table and the CSV carry the
same numbers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.chart import Chart, usage_chart
from console.gateway import PORTAL, segment
from console.pages import Parts, portal_principal
from console.portal import console_banner
from console.session import Principal

if TYPE_CHECKING:
    from console.app import Console

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
DEFAULT_RANGE = "period"
# The gateway's overview counts these as the org's current subscription.
CURRENT_STATES = (
    "SUBSCRIPTION_STATE_ACTIVE",
    "SUBSCRIPTION_STATE_TRIALING",
    "SUBSCRIPTION_STATE_PAST_DUE",
    "SUBSCRIPTION_STATE_PAUSED",
)
CSV_HEADER = ("metric", "start_time", "end_time", "value", "event_count")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    bucket: str  # the gateway's TimeBucket
    time_format: str
    span: str  # what a chart's total covers


RANGES = {
    r.key: r
    for r in (
        Range("day", "Last 24 hours", "TIME_BUCKET_HOUR", "%Y-%m-%d %H:00", "in the last 24 hours"),
        Range("week", "Last 7 days", "TIME_BUCKET_DAY", "%Y-%m-%d", "in the last 7 days"),
        Range("period", "This billing period", "TIME_BUCKET_DAY", "%Y-%m-%d", "this period"),
    )
}


@dataclass(frozen=True)
class Window:
    range: Range
    start: datetime
    end: datetime  # exclusive


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime
    value: Decimal
    event_count: int

    @property
    def text(self) -> str:
        """The value as a plain decimal: 0.000001, never 1E-6."""
        return f"{self.value:f}"


@dataclass(frozen=True)
class Series:
    metric: str
    aggregation: str
    buckets: tuple[Bucket, ...]
    chart: Chart


def _truncate(when: datetime, width: timedelta) -> datetime:
    when = when.astimezone(UTC)
    if width == HOUR:
        return when.replace(minute=0, second=0, microsecond=0)
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def window(key: str, now: datetime, period_start: datetime, period_end: datetime) -> Window:
    """The picked range's [start, end): whole buckets, up to the one ``now`` falls in."""
    chosen = RANGES.get(key, RANGES[DEFAULT_RANGE])
    width = HOUR if chosen.bucket == "TIME_BUCKET_HOUR" else DAY
    # The bucket now is in still counts: the window ends at its end.
    end = _truncate(now, width) + width
    if chosen.key == "day":
        return Window(chosen, end - 24 * HOUR, end)
    if chosen.key == "week":
        return Window(chosen, end - 7 * DAY, end)
    # A period not over yet ends today; future days would only be zeros.
    return Window(chosen, period_start, max(min(end, period_end), period_start + HOUR))


def _timestamp(text: object) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def buckets_of(answer: dict[str, Any]) -> tuple[Bucket, ...]:
    """The gateway's buckets, their values exact (a missing or odd value reads as 0)."""
    out = []
    for b in answer.get("buckets", []):
        try:
            value = Decimal(str(b.get("value") or "0"))
        except InvalidOperation:
            value = Decimal(0)
        out.append(
            Bucket(
                _timestamp(b["startTime"]),
                _timestamp(b["endTime"]),
                value,
                int(b.get("eventCount") or 0),
            )
        )
    return tuple(out)


def series_of(metric: str, answer: dict[str, Any], chosen: Range) -> Series:
    buckets = buckets_of(answer)
    aggregation = str(answer.get("aggregation") or "")
    chart = usage_chart(
        metric,
        [(b.start, b.value) for b in buckets],
        aggregation,
        running_total=False,
        span=chosen.span,
        time_format=chosen.time_format,
        limit_note="",
    )
    return Series(metric, aggregation, buckets, chart)


def safe_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text, never evaluates."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def usage_csv(series: Series) -> str:
    """A header row, then one row per bucket; values as the exact decimals shown."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for b in series.buckets:
        writer.writerow(
            (
                safe_cell(series.metric),
                _rfc3339(b.start),
                _rfc3339(b.end),
                b.text,
                str(b.event_count),
            )
        )
    return out.getvalue()


def csv_filename(org_id: str, metric: str, chosen: Range, start: datetime) -> str:
    parts = (org_id, metric, chosen.key, start.strftime("%Y%m%d"))
    name = "-".join(_FILENAME_UNSAFE.sub("_", p) for p in parts)
    return f"usage-{name}.csv"


def current_subscription(subscriptions: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return next((s for s in subscriptions if s.get("state") in CURRENT_STATES), None)


def metric_codes(version: dict[str, Any] | None) -> list[str]:
    """The subscribed version's metered metrics, in the order of its charges."""
    codes: list[str] = []
    for charge in ((version or {}).get("packageVersion") or {}).get("charges", []):
        code = charge.get("metricCode")
        if code and code not in codes:
            codes.append(str(code))
    return codes


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def subscription_of(principal: Principal, rid: str) -> dict[str, Any] | None:
        listed = await gateway.get(f"{PORTAL}/subscriptions", principal.token, rid)
        return current_subscription(listed.get("subscriptions", []))

    def window_of(request: Request, subscription: dict[str, Any]) -> Window:
        return window(
            request.query_params.get("range", DEFAULT_RANGE),
            datetime.now(UTC),
            _timestamp(subscription["currentPeriodStartTime"]),
            _timestamp(subscription["currentPeriodEndTime"]),
        )

    async def query(
        principal: Principal, rid: str, subscription: dict[str, Any], metric: str, w: Window
    ) -> dict[str, Any]:
        return await gateway.get(
            f"{PORTAL}/usage:query",
            principal.token,
            rid,
            {
                "metricCode": metric,
                "subscriptionId": subscription["subscriptionId"],
                "startTime": _rfc3339(w.start),
                "endTime": _rfc3339(w.end),
                "bucket": w.range.bucket,
            },
        )

    async def usage_page(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        rid = console.request_id(request)
        subscription = await subscription_of(principal, rid)
        if subscription is None:
            return console.render(
                request, "portal_usage/usage.html", {"subscription": None, "ranges": RANGES}
            )
        w = window_of(request, subscription)
        parts = Parts()
        version = await parts.get(
            "plan metrics",
            gateway.get(
                f"{PORTAL}/packageVersions/{segment(subscription.get('packageVersionId', ''))}",
                principal.token,
                rid,
            ),
        )
        codes = metric_codes(version)
        answers = await asyncio.gather(
            *(
                parts.get(f"usage of {code}", query(principal, rid, subscription, code, w))
                for code in codes
            )
        )
        series = [
            series_of(code, answer, w.range)
            for code, answer in zip(codes, answers, strict=True)
            if answer is not None
        ]
        return console.render(
            request,
            "portal_usage/usage.html",
            {
                "subscription": subscription,
                "ranges": RANGES,
                "window": w,
                "series": series,
                "banner": console_banner(parts),
            },
        )

    async def usage_download(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        metric = request.query_params.get("metric", "").strip()
        if not metric:
            return console.render(request, "not_found.html", status_code=404)
        rid = console.request_id(request)
        subscription = await subscription_of(principal, rid)
        if subscription is None:
            return console.render(request, "not_found.html", status_code=404)
        w = window_of(request, subscription)
        answer = await query(principal, rid, subscription, metric, w)
        filename = csv_filename(principal.org_id, metric, w.range, w.start)
        return Response(
            usage_csv(series_of(metric, answer, w.range)),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    return [
        Route("/portal/usage", usage_page),
        Route("/portal/usage.csv", usage_download),
    ]
