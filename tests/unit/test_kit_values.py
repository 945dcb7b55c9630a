"""Kit value helpers: page tokens, decimal strings, instants, violation lists."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kit.errors import InvalidArgument, Violations
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.protoconv import format_decimal, from_timestamp, parse_decimal, to_timestamp


def test_page_size_defaults_and_clamps() -> None:
    assert page_size(0) == 50
    assert page_size(10) == 10
    assert page_size(10_000) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1)


@given(st.lists(st.one_of(st.integers(), st.text(max_size=20)), max_size=4))
def test_page_token_round_trips(after: list[object]) -> None:
    token = PageToken(after=after).encode({"org_id": "o1"})
    decoded = PageToken.decode(token, {"org_id": "o1"})
    assert decoded is not None
    assert decoded.after == after


def test_page_token_refuses_other_filters_and_garbage() -> None:
    token = PageToken(after=["x"]).encode({"org_id": "o1"})
    with pytest.raises(InvalidArgument) as caught:
        PageToken.decode(token, {"org_id": "o2"})
    assert caught.value.violations[0].field == "page_token"
    with pytest.raises(InvalidArgument):
        PageToken.decode("not-a-token!", {})
    assert PageToken.decode("", {}) is None


def test_next_page_token_only_when_a_row_is_left_over() -> None:
    rows = [1, 2, 3]
    assert next_page_token(rows, 3, lambda r: [r], {}) == ""
    token = next_page_token(rows, 2, lambda r: [r], {})
    decoded = PageToken.decode(token, {})
    assert decoded is not None and decoded.after == [2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.000000000001", Decimal("1E-12")), ("12", Decimal(12)), ("49.90", Decimal("49.90"))],
)
def test_decimals_parse_exactly(text: str, expected: Decimal) -> None:
    v = Violations()
    assert parse_decimal(text, "unit_amount", v) == expected
    assert not v


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is required"),
        ("abc", "is not a decimal number"),
        ("-1", "must not be negative"),
        ("0.0000000000001", "more than 12 decimal places"),
        ("NaN", "not a finite number"),
    ],
)
def test_bad_decimals_become_field_violations(text: str, problem: str) -> None:
    v = Violations()
    assert parse_decimal(text, "tiers[0].unit_amount", v) is None
    assert v.items[0].field == "tiers[0].unit_amount"
    assert problem in v.items[0].description


def test_violations_collect_then_raise_once() -> None:
    v = Violations()
    v.check(False, "code", "is required")
    v.check(True, "name", "never")
    inner = Violations()
    inner.add("up_to", "out of order")
    v.extend(inner, prefix="tiers[1]")
    with pytest.raises(InvalidArgument) as caught:
        v.raise_if_any()
    assert [x.field for x in caught.value.violations] == ["code", "tiers[1].up_to"]


@given(st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=0, max_value=10**9))
def test_format_decimal_round_trips(value: Decimal) -> None:
    assert Decimal(format_decimal(value)) == value
    assert "E" not in format_decimal(value)


def test_timestamps_are_utc_and_optional() -> None:
    at = datetime(2026, 11, 24, 12, 30, 15, tzinfo=UTC)
    ts = to_timestamp(at)
    assert ts is not None
    assert from_timestamp(ts) == at
    assert to_timestamp(None) is None
    assert from_timestamp(ts, present=False) is None
