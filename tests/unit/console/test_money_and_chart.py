"""Money from minor units by the kit's currency table, and the chart's layout (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.chart import HEIGHT, PAD, WIDTH, usage_chart
from console.money import format_amount, format_money, major_amount
from services.kit.currency import MINOR_UNITS


@pytest.mark.parametrize(
    ("minor", "code", "text"),
    [
        (123456, "USD", "$1,234.56"),
        (-1250, "EUR", "-€12.50"),
        (1234, "JPY", "¥1,234"),
        (1234, "KWD", "1.234 KWD"),
        (5, "CLF", "0.0005 CLF"),
        (0, "GBP", "£0.00"),
    ],
)
def test_amounts_use_the_currencys_own_exponent(minor: int, code: str, text: str) -> None:
    assert format_amount(minor, code) == text


def test_protobuf_json_money_and_missing_values() -> None:
    assert format_money({"currencyCode": "USD", "amountMinor": "9007199254740993"}) == (
        "$90,071,992,547,409.93"  # beyond float's 2**53: exact all the same
    )
    assert format_money({"currencyCode": "USD"}) == "$0.00"  # proto3 JSON omits zero
    assert format_money({}, "USD") == "—"
    assert format_money({"amountMinor": "100"}, "JPY") == "¥100"
    assert format_money(None) == "—"


@given(st.integers(-(10**15), 10**15), st.sampled_from(sorted(MINOR_UNITS)))
def test_major_amount_is_exactly_the_minor_units(minor: int, code: str) -> None:
    value = major_amount(minor, code)
    assert value.scaleb(MINOR_UNITS[code]) == minor
    assert -value.as_tuple().exponent == MINOR_UNITS[code]  # type: ignore[operator]


values = st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False)


@given(
    st.lists(values, min_size=0, max_size=40),
    st.sampled_from(["AGGREGATION_COUNT", "AGGREGATION_SUM", "AGGREGATION_MAX"]),
    st.none() | values,
)
def test_the_chart_stays_in_its_box_and_ends_at_the_total(
    series: list[Decimal], aggregation: str, limit: Decimal | None
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    buckets = [(start + timedelta(days=i), v) for i, v in enumerate(series)]
    chart = usage_chart("api_calls", buckets, aggregation, limit)
    assert len(chart.points) == len(series)
    for point in chart.points:
        assert PAD <= point.x <= WIDTH - PAD and PAD <= point.y <= HEIGHT - PAD
    xs = [p.x for p in chart.points]
    assert xs == sorted(xs)
    cumulative = aggregation != "AGGREGATION_MAX"
    expected = sum(series, Decimal(0)) if cumulative else max(series, default=Decimal(0))
    assert chart.total == expected
    if cumulative:  # a running total never falls; SVG y grows downwards
        ys = [p.y for p in chart.points]
        assert ys == sorted(ys, reverse=True)
    if limit is not None:
        assert chart.limit_y is not None and PAD <= chart.limit_y <= HEIGHT - PAD
        assert chart.over_limit == (chart.total > limit)
