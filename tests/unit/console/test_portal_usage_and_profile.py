"""The usage page's windows, series and CSV, and the billing profile's form mapping (pure)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import FormData

from console.chart import HEIGHT, PAD, WIDTH, usage_chart
from console.portal_profile import offers_test_cards, profile_body, profile_values
from console.portal_usage import (
    CSV_HEADER,
    DAY,
    HOUR,
    csv_filename,
    current_subscription,
    metric_codes,
    safe_cell,
    series_of,
    usage_csv,
    window,
)
from console.portal_usage import RANGES as USAGE_RANGES

NOW = datetime(2026, 12, 3, 13, 47, 12, tzinfo=UTC)
PERIOD = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def test_each_range_is_whole_buckets_up_to_the_one_now_is_in() -> None:
    day = window("day", NOW, *PERIOD)
    assert (day.start, day.end) == (
        datetime(2026, 12, 2, 14, tzinfo=UTC),
        datetime(2026, 12, 3, 14, tzinfo=UTC),
    )
    assert day.range.bucket == "TIME_BUCKET_HOUR"
    week = window("week", NOW, *PERIOD)
    assert (week.start, week.end) == (
        datetime(2026, 11, 27, tzinfo=UTC),
        datetime(2026, 12, 4, tzinfo=UTC),
    )
    assert week.range.bucket == "TIME_BUCKET_DAY"
    period = window("period", NOW, *PERIOD)
    assert (period.start, period.end) == (PERIOD[0], datetime(2026, 12, 4, tzinfo=UTC))
    # An unknown range is the default one, never an error page.
    assert window("<script>", NOW, *PERIOD) == period


@given(
    st.sampled_from(sorted(USAGE_RANGES)),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(0, 40 * 24),
    st.integers(1, 40 * 24),
)
def test_a_window_is_never_empty_and_stays_in_the_gateways_limits(
    key: str, now: datetime, hours_before: int, length_hours: int
) -> None:
    start = now - timedelta(hours=hours_before)
    end = start + timedelta(hours=length_hours)
    w = window(key, now, start, end)
    assert w.start < w.end
    width = HOUR if w.range.bucket == "TIME_BUCKET_HOUR" else DAY
    assert w.end - w.start <= (timedelta(days=90) if width == HOUR else timedelta(days=3 * 365))
    if key != "period" or end > now:  # the bucket now is in is shown
        assert w.end > now
    else:  # a period that is over (not renewed yet) is shown whole
        assert w.end == max(end, start + HOUR)


ANSWER = {
    "aggregation": "AGGREGATION_COUNT",
    "buckets": [
        {
            "startTime": "2026-12-01T00:00:00Z",
            "endTime": "2026-12-02T00:00:00Z",
            "value": "41",
            "eventCount": "41",
        },
        {
            "startTime": "2026-12-02T00:00:00Z",
            "endTime": "2026-12-03T00:00:00Z",
            "value": "0.000000000000000001",
            "eventCount": "1",
        },
        # proto3 JSON leaves zeros out
        {"startTime": "2026-12-03T00:00:00Z", "endTime": "2026-12-04T00:00:00Z", "value": "0"},
    ],
}


def test_the_series_keeps_every_bucket_exactly_and_charts_each_buckets_own_value() -> None:
    series = series_of("api_calls", ANSWER, USAGE_RANGES["period"])
    assert [b.value for b in series.buckets] == [
        Decimal("41"),
        Decimal("0.000000000000000001"),
        Decimal(0),
    ]
    assert [b.event_count for b in series.buckets] == [41, 1, 0]
    assert [p.value for p in series.chart.points] == [b.value for b in series.buckets]
    assert series.chart.total == Decimal("41.000000000000000001")
    assert series.chart.limit is None and series.chart.limit_note == ""


def test_the_csv_has_a_header_and_the_tables_exact_numbers() -> None:
    text = usage_csv(series_of("api_calls", ANSWER, USAGE_RANGES["period"]))
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_HEADER
    assert rows[1:] == [
        ["api_calls", "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", "41", "41"],
        # A plain decimal, never "1E-18", which a spreadsheet would round to a float.
        ["api_calls", "2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z", "0.000000000000000001", "1"],
        ["api_calls", "2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z", "0", "0"],
    ]


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_a_text_cell_that_a_spreadsheet_would_run_is_prefixed(lead: str) -> None:
    formula = f'{lead}HYPERLINK("http://evil.example","x")'
    assert safe_cell(formula) == "'" + formula
    rows = list(csv.reader(io.StringIO(usage_csv(series_of(formula, ANSWER, USAGE_RANGES["day"])))))
    assert {r[0] for r in rows[1:]} == {"'" + formula}


def test_plain_text_is_left_alone_and_the_filename_is_safe() -> None:
    assert safe_cell("api_calls") == "api_calls"
    name = csv_filename('org"demo', "../a b", USAGE_RANGES["week"], NOW)
    assert name == "usage-org_demo-.._a_b-week-20261203.csv"
    assert '"' not in name and "/" not in name


def test_the_current_subscription_and_the_plans_metrics() -> None:
    subs = [
        {"subscriptionId": "s1", "state": "SUBSCRIPTION_STATE_CANCELED"},
        {"subscriptionId": "s2", "state": "SUBSCRIPTION_STATE_TRIALING"},
    ]
    assert current_subscription(subs) == subs[1]
    assert current_subscription(subs[:1]) is None
    version = {
        "packageVersion": {
            "charges": [
                {"metricCode": "api_calls"},
                {"metricCode": "storage_gb"},
                {},
                {"metricCode": "api_calls"},
            ]
        }
    }
    assert metric_codes(version) == ["api_calls", "storage_gb"]
    assert metric_codes(None) == []


def test_the_profile_form_round_trips_to_update_billing_profiles_body() -> None:
    profile = {
        "legalName": "Umbrella Corp",
        "invoiceEmail": "billing@umbrella.test",
        "address": {"line1": "1 Hive Way", "postalCode": "RC-1", "countryCode": "US"},
    }
    values = profile_values(profile)
    assert values["billing_profile.legal_name"] == "Umbrella Corp"
    assert values["billing_profile.address.postal_code"] == "RC-1"
    assert values["billing_profile.tax_id"] == ""
    body = profile_body(FormData([*values.items(), ("request_id", "r1")]), "r1")
    assert body["billingProfile"]["invoiceEmail"] == "billing@umbrella.test"
    assert body["billingProfile"]["address"]["countryCode"] == "US"
    assert body["billingProfile"]["address"]["line2"] == ""
    assert body["updateMask"] == "legalName,address,taxId,invoiceEmail"
    assert body["requestId"] == "r1"


def test_test_cards_are_offered_only_in_dev_against_a_test_mode_provider() -> None:
    assert offers_test_cards(True, "pk_test_tally_emulator")
    assert offers_test_cards(True, "")
    assert not offers_test_cards(True, "pk_live_123")
    assert not offers_test_cards(False, "pk_test_tally_emulator")


@given(
    st.lists(st.decimals(min_value=0, max_value=10**9, places=6), max_size=40),
    st.sampled_from(["AGGREGATION_COUNT", "AGGREGATION_SUM", "AGGREGATION_MAX"]),
)
def test_a_per_bucket_chart_draws_each_buckets_own_value_inside_its_box(
    series: list[Decimal], aggregation: str
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    chart = usage_chart(
        "m", [(start + HOUR * i, v) for i, v in enumerate(series)], aggregation, running_total=False
    )
    assert [p.value for p in chart.points] == series
    for point in chart.points:
        assert PAD <= point.x <= WIDTH - PAD and PAD <= point.y <= HEIGHT - PAD
    if aggregation == "AGGREGATION_MAX":
        assert chart.total == max(series, default=Decimal(0))
    else:
        assert chart.total == sum(series, Decimal(0))
