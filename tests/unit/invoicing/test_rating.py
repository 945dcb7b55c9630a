"""Worked examples of the rating engine, tier by tier (docs/money.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.invoicing.rating import (
    Charge,
    Tier,
    Usage,
    format_amount,
    minor_to_decimal,
    prorate,
    rate,
    round_to_minor,
    seconds_between,
)
from services.kit.errors import InvalidArgument

D = Decimal


def charge(**data: Any) -> Charge:
    return Charge.from_json({"currency": "USD", **data})


GRADUATED = {
    "model": "graduated",
    "tiers": [
        {"up_to": "100", "unit_amount": "0", "flat_amount": "10"},
        {"up_to": "1000", "unit_amount": "0.05", "flat_amount": "5"},
        {"unit_amount": "0.01"},
    ],
}
VOLUME = {
    "model": "volume",
    "tiers": [
        {"up_to": "100", "unit_amount": "1", "flat_amount": "0"},
        {"up_to": "1000", "unit_amount": "0.8", "flat_amount": "20"},
        {"unit_amount": "0.5", "flat_amount": "50"},
    ],
}


# --- money -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("0.125", "USD", 13),
        ("0.124999", "USD", 12),
        ("0.115", "USD", 12),  # HALF_UP, not banker's rounding (which gives 12 too)
        ("0.135", "USD", 14),
        ("0.145", "USD", 15),  # banker's rounding would give 14
        ("-0.125", "USD", -13),  # ties away from zero: a credit mirrors its charge
        ("49", "USD", 4900),
        ("0.5", "JPY", 1),
        ("1.5", "JPY", 2),
        ("2.5", "JPY", 3),
        ("0.4999", "JPY", 0),
        ("1.0005", "KWD", 1001),
        ("1.0004999", "KWD", 1000),
        ("0.00005", "CLF", 1),
        ("0", "EUR", 0),
    ],
)
def test_round_to_minor_half_up(amount: str, currency: str, minor: int) -> None:
    assert round_to_minor(D(amount), currency) == minor


def test_round_to_minor_unknown_currency() -> None:
    with pytest.raises(ValueError):
        round_to_minor(D(1), "XAU")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (4900, "USD", "49.00"),
        (4900, "JPY", "4900"),
        (1500, "KWD", "1.500"),
        (5, "USD", "0.05"),
        (0, "USD", "0.00"),
        (-1250, "EUR", "-12.50"),
    ],
)
def test_format_amount(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text
    assert minor_to_decimal(minor, currency) == D(text)


# --- standard ----------------------------------------------------------------


def test_standard_sub_cent_unit_price() -> None:
    r = rate(charge(model="standard", unit_amount="0.000125"), quantity=D(1_000_000))
    assert r.amount == D("125")
    assert r.amount_minor == 12500
    assert r.to_json()["amount"] == "125.00"


def test_standard_rounds_once_per_line() -> None:
    # 333 x 0.0015 = 0.4995 -> 0.50; rounding per unit would give 0.
    r = rate(charge(model="standard", unit_amount="0.0015"), quantity=D(333))
    assert r.amount == D("0.4995")
    assert r.amount_minor == 50


def test_standard_in_jpy_and_kwd() -> None:
    jpy = Charge.from_json({"model": "standard", "currency": "JPY", "unit_amount": "0.35"})
    assert rate(jpy, quantity=D(10)).amount_minor == 4  # 3.5 -> 4
    assert rate(jpy, quantity=D(10)).to_json()["amount"] == "4"
    kwd = Charge.from_json({"model": "standard", "currency": "KWD", "unit_amount": "0.0005"})
    out = rate(kwd, quantity=D(3001)).to_json()  # 1.5005 -> 1.501
    assert (out["amount"], out["amount_minor"]) == ("1.501", 1501)


def test_standard_fractional_quantity() -> None:
    r = rate(charge(model="standard", unit_amount="0.10"), quantity=D("12.345"))
    assert r.amount == D("1.2345")
    assert r.amount_minor == 123


# --- graduated ---------------------------------------------------------------


def test_graduated_tier_by_tier() -> None:
    r = rate(charge(**GRADUATED), quantity=D(1500))
    rows = [(d.tier, d.quantity, d.amount) for d in r.details]
    # tier 1: 100 x 0 + 10 flat; tier 2: 900 x 0.05 + 5 flat; tier 3: 500 x 0.01
    assert rows == [(1, D(100), D(10)), (2, D(900), D(50)), (3, D(500), D(5))]
    assert r.amount == D(65)
    assert r.to_json()["amount"] == "65.00"
    assert r.to_json()["details"][1] == {
        "description": "tier 2: over 100 up to 1000",
        "tier": "2",
        "quantity": "900",
        "unit_amount": "0.05",
        "flat_amount": "5",
        "amount": "50",
    }


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "0"),  # zero usage enters no tier: no flat amount either
        ("1", "10"),
        ("100", "10"),  # up_to is inclusive: still tier 1
        ("100.5", "15.025"),  # enters tier 2: its flat amount + 0.5 x 0.05
        ("101", "15.05"),
        ("1000", "60"),
        ("1001", "60.01"),
    ],
)
def test_graduated_boundaries(quantity: str, amount: str) -> None:
    assert rate(charge(**GRADUATED), quantity=D(quantity)).amount == D(amount)


def test_graduated_zero_usage_has_no_details() -> None:
    r = rate(charge(**GRADUATED), quantity=D(0))
    assert r.details == ()
    assert r.amount_minor == 0


# --- volume ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "tier", "amount"),
    [
        ("50", 1, "50"),
        ("100", 1, "100"),
        ("101", 2, "100.8"),  # all 101 units at 0.8 + 20 flat
        ("1000", 2, "820"),
        ("2000", 3, "1050"),  # 2000 x 0.5 + 50
    ],
)
def test_volume_all_units_at_reached_tier(quantity: str, tier: int, amount: str) -> None:
    r = rate(charge(**VOLUME), quantity=D(quantity))
    assert r.amount == D(amount)
    assert [d.tier for d in r.details] == [tier]
    assert r.details[0].quantity == D(quantity)


def test_volume_zero_usage_charges_nothing() -> None:
    tiers = [{"up_to": "10", "unit_amount": "1", "flat_amount": "99"}, {"unit_amount": "1"}]
    assert rate(charge(model="volume", tiers=tiers), quantity=D(0)).amount == 0
    assert rate(charge(model="volume", tiers=tiers), quantity=D(1)).amount == D(100)


# --- package -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "blocks", "amount"),
    [
        ("0", 0, "0"),
        ("100", 0, "0"),  # all free
        ("101", 1, "5"),  # one unit starts a block, charged in full
        ("1100", 1, "5"),
        ("1100.5", 2, "10"),
        ("2500", 3, "15"),
    ],
)
def test_package_blocks_after_free_units(quantity: str, blocks: int, amount: str) -> None:
    c = charge(model="package", package_size="1000", package_amount="5", free_units="100")
    r = rate(c, quantity=D(quantity))
    assert r.amount == D(amount)
    charged = [d for d in r.details if d.unit_amount is not None]
    assert sum((d.quantity or 0 for d in charged), D(0)) == blocks


def test_package_breakdown() -> None:
    c = charge(model="package", package_size=1000, package_amount="5", free_units=100)
    out = rate(c, quantity=D(2500)).to_json()
    assert out["details"] == [
        {"description": "100 free units", "quantity": "100", "amount": "0"},
        {
            "description": "3 packages of 1000 units for 2400 units",
            "quantity": "3",
            "unit_amount": "5",
            "amount": "15",
        },
    ]


# --- percentage --------------------------------------------------------------


def pct(**extra: Any) -> Charge:
    return charge(model="percentage", rate="2.9", fixed_amount="0.30", **extra)


def test_percentage_rate_plus_fixed_fee_per_event() -> None:
    r = rate(pct(), events=[D("100"), D("10")])
    # 2.9 + 0.30 and 0.29 + 0.30
    assert r.amount == D("3.79")
    assert r.amount_minor == 379


def test_percentage_no_events_is_zero() -> None:
    assert rate(pct(), events=[]).amount == 0


def test_percentage_free_events() -> None:
    r = rate(pct(free_units_per_events=2), events=[D(100), D(100), D(100)])
    assert r.amount == D("3.2")
    assert r.details[0].description == "free allowance: 2 events, 200 of amount"


def test_percentage_free_amount_partial_event() -> None:
    # 150 free: event 1 (100) free, event 2 (100) pays on 50, event 3 in full.
    r = rate(pct(free_units_per_total_aggregation="150"), events=[D(100), D(100), D(100)])
    assert r.amount == D("1.45") + D("0.30") + D("2.90") + D("0.30")


def test_percentage_whichever_allowance_runs_out_first() -> None:
    both = {"free_units_per_events": 3, "free_units_per_total_aggregation": "1000"}
    # events run out first: 3 free events of 10, the 4th pays in full
    r = rate(pct(**both), events=[D(10)] * 4)
    assert r.amount == D("0.59")
    # amount runs out first: 600 + 400 free, the 3rd event pays although events remain
    r = rate(pct(**both), events=[D(600), D(400), D(100)])
    assert r.amount == D("3.2")
    # amount runs out inside event 2: it pays on 300 of its 700
    r = rate(pct(**both), events=[D(600), D(700)])
    assert r.amount == D("8.7") + D("0.30")


def test_percentage_min_and_max_per_transaction() -> None:
    c = pct(per_transaction_min_amount="0.50", per_transaction_max_amount="5")
    r = rate(c, events=[D(1), D(100), D(1000)])
    # 0.329 -> 0.50; 3.20; 29.30 -> 5
    assert r.amount == D("8.70")
    by_text = {d.description: d.amount for d in r.details}
    assert by_text["per-transaction minimum 0.5 on 1 transactions"] == D("0.171")
    assert by_text["per-transaction maximum 5 on 1 transactions"] == D("-24.3")
    assert sum((d.amount for d in r.details), D(0)) == r.amount


def test_percentage_free_events_pay_no_minimum() -> None:
    c = pct(free_units_per_events=1, per_transaction_min_amount="1")
    assert rate(c, events=[D(1), D(1)]).amount == D(1)


# --- graduated_percentage ----------------------------------------------------

GRAD_PCT = {
    "model": "graduated_percentage",
    "tiers": [
        {"up_to": "1000", "rate": "3", "flat_amount": "1"},
        {"up_to": "10000", "rate": "2", "flat_amount": "5"},
        {"rate": "1", "flat_amount": "0"},
    ],
}


def test_graduated_percentage_tier_by_tier() -> None:
    r = rate(charge(**GRAD_PCT), quantity=D(12000))
    rows = [(d.tier, d.quantity, d.rate, d.amount) for d in r.details]
    assert rows == [
        (1, D(1000), D(3), D(31)),  # 3 % of 1000 + 1
        (2, D(9000), D(2), D(185)),  # 2 % of 9000 + 5
        (3, D(2000), D(1), D(20)),
    ]
    assert r.amount == D(236)


def test_graduated_percentage_on_events_rates_their_total() -> None:
    c = charge(**GRAD_PCT)
    assert rate(c, events=[D(600), D(600)]).amount == D("31") + D("9")  # total 1200
    assert rate(c, events=[]).amount == 0


# --- minimum commitment ------------------------------------------------------


def test_minimum_commitment_true_up() -> None:
    c = charge(model="standard", unit_amount="0.01", minimum_amount="20")
    r = rate(c, quantity=D(500))
    assert r.amount == D(20)
    assert r.details[-1].amount == D(15)
    assert "true-up" in r.details[-1].description
    assert rate(c, quantity=D(0)).amount == D(20)
    above = rate(c, quantity=D(5000))
    assert above.amount == D(50)
    assert len(above.details) == 1


# --- usage and input validation ---------------------------------------------


def test_usage_from_json() -> None:
    assert Usage.from_json({"quantity": "1.5"}).quantity == D("1.5")
    assert Usage.from_json({"events": ["1", 2]}).events == (D(1), D(2))
    for bad in ({}, {"quantity": "1", "events": []}, {"quantity": 1.5}, {"events": ["-1"]}):
        with pytest.raises(InvalidArgument):
            Usage.from_json(bad)


def test_rate_refuses_wrong_usage_kind() -> None:
    with pytest.raises(InvalidArgument):
        rate(charge(model="standard", unit_amount="1"), events=[D(1)])
    with pytest.raises(InvalidArgument):
        rate(pct(), quantity=D(1))
    with pytest.raises(InvalidArgument):
        rate(charge(model="standard", unit_amount="1"), quantity=D(-1))


def violations(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        Charge.from_json(data)
    return {v.field: v.description for v in info.value.violations}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"model": "flat", "currency": "USD"}, "model"),
        ({"model": "standard", "currency": "usd", "unit_amount": "1"}, "currency"),
        ({"model": "standard", "currency": "XAU", "unit_amount": "1"}, "currency"),
        ({"model": "standard", "currency": "USD"}, "unit_amount"),
        ({"model": "standard", "currency": "USD", "unit_amount": 0.1}, "unit_amount"),
        ({"model": "standard", "currency": "USD", "unit_amount": "-1"}, "unit_amount"),
        ({"model": "standard", "currency": "USD", "unit_amount": "1e-13"}, "unit_amount"),
        ({"model": "standard", "currency": "USD", "unit_amount": "abc"}, "unit_amount"),
        ({"model": "standard", "currency": "USD", "unit_amount": "NaN"}, "unit_amount"),
        ({"model": "standard", "currency": "USD", "unit_amount": "1", "tiers": [{}]}, "tiers"),
        ({"model": "standard", "currency": "USD", "unit_amount": "1", "price": "1"}, "price"),
        ({"model": "graduated", "currency": "USD"}, "tiers"),
        (
            {
                "model": "graduated",
                "currency": "USD",
                "tiers": [{"unit_amount": "1", "up_to": "5"}],
            },
            "tiers[0].up_to",
        ),
        (
            {
                "model": "volume",
                "currency": "USD",
                "tiers": [
                    {"up_to": "10", "unit_amount": "1"},
                    {"up_to": "10", "unit_amount": "1"},
                    {"unit_amount": "1"},
                ],
            },
            "tiers[1].up_to",
        ),
        (
            {
                "model": "volume",
                "currency": "USD",
                "tiers": [{"unit_amount": "1"}, {"unit_amount": "1"}],
            },
            "tiers[0].up_to",
        ),
        (
            {"model": "graduated_percentage", "currency": "USD", "tiers": [{"rate": "101"}]},
            "tiers[0].rate",
        ),
        ({"model": "package", "currency": "USD", "package_amount": "5"}, "package_size"),
        (
            {"model": "package", "currency": "USD", "package_size": "0", "package_amount": "5"},
            "package_size",
        ),
        ({"model": "percentage", "currency": "USD"}, "rate"),
        (
            {"model": "percentage", "currency": "USD", "rate": "1", "free_units_per_events": -1},
            "free_units_per_events",
        ),
        (
            {
                "model": "percentage",
                "currency": "USD",
                "rate": "1",
                "per_transaction_min_amount": "5",
                "per_transaction_max_amount": "1",
            },
            "per_transaction_max_amount",
        ),
        (
            {"model": "standard", "currency": "USD", "unit_amount": "1", "minimum_amount": "-1"},
            "minimum_amount",
        ),
    ],
)
def test_bad_charge_json(data: dict[str, Any], field: str) -> None:
    assert field in violations(data)


def test_bad_charge_json_lists_every_violation() -> None:
    found = violations(
        {
            "model": "graduated",
            "currency": "usd",
            "tiers": [{"up_to": "10", "unit_amount": "x"}, {"up_to": "5", "unit_amount": "1"}],
        }
    )
    assert set(found) == {"currency", "tiers[0].unit_amount", "tiers[1].up_to"}


def test_charge_json_ignores_catalog_metadata() -> None:
    c = charge(model="standard", unit_amount="1", charge_id="chg_1", display_name="Calls")
    assert c == Charge(model="standard", currency="USD", unit_amount=D(1))
    assert charge(**GRADUATED).tiers[2] == Tier(up_to=None, unit_amount=D("0.01"))


def test_charge_json_not_an_object() -> None:
    with pytest.raises(InvalidArgument):
        Charge.from_json([])  # type: ignore[arg-type]


# --- proration ---------------------------------------------------------------


def test_prorate_to_the_second_matches_days_at_midnight() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    change = datetime(2026, 11, 11, tzinfo=UTC)
    period = seconds_between(start, end)
    assert period == 30 * 86_400
    used = seconds_between(start, change)
    assert prorate(D("30.00"), used, period) == D(10)
    assert prorate(D("30.00"), period - used, period) == D(20)


def test_prorate_is_unrounded_until_the_line() -> None:
    third = prorate(D(100), 1, 3)
    assert third != D("33.33")
    assert round_to_minor(third, "USD") == 3333
    assert prorate(D("-49"), 86_400, 30 * 86_400) < 0  # a credit


def test_prorate_and_seconds_between_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        prorate(D(1), 1, 0)
    with pytest.raises(ValueError):
        prorate(D(1), 2, 1)
    with pytest.raises(ValueError):
        seconds_between(datetime(2026, 1, 2), datetime(2026, 1, 3))
    with pytest.raises(ValueError):
        seconds_between(datetime(2026, 1, 3, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))


def test_rate_refuses_a_hand_built_package_without_size() -> None:
    with pytest.raises(InvalidArgument):
        rate(Charge(model="package", currency="USD", package_amount=D(5)), quantity=D(1))
