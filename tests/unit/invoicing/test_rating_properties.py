"""Properties of the rating engine, checked by hypothesis (issue 5)."""

from __future__ import annotations

from decimal import Context, Decimal, localcontext
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from services.invoicing.rating import Charge, Tier, prorate, rate, round_to_minor
from services.invoicing.rating.engine import package_blocks, percentage_fees
from services.invoicing.rating.money import minor_to_decimal

D = Decimal
CURRENCIES = st.sampled_from(["USD", "JPY", "KWD", "EUR", "BHD", "CLP"])


def amounts(places: int = 6, high: int = 1000) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=0, max_value=high, places=places, allow_nan=False, allow_infinity=False
    )


def quantities() -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=0, max_value=10**7, places=3, allow_nan=False, allow_infinity=False
    )


@st.composite
def tiers(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(quantities().filter(lambda q: q > 0), max_size=5)))
    out = [Tier(up_to=b, unit_amount=draw(amounts()), flat_amount=draw(amounts(2))) for b in bounds]
    out.append(Tier(up_to=None, unit_amount=draw(amounts()), flat_amount=draw(amounts(2))))
    return tuple(out)


@given(tiers(), quantities(), quantities(), CURRENCIES)
def test_graduated_is_monotone_in_quantity(
    ts: tuple[Tier, ...], a: Decimal, b: Decimal, currency: str
) -> None:
    low, high = sorted((a, b))
    c = Charge(model="graduated", currency=currency, tiers=ts)
    r_low, r_high = rate(c, quantity=low), rate(c, quantity=high)
    assert r_low.amount <= r_high.amount
    assert r_low.amount_minor <= r_high.amount_minor


@given(tiers(), quantities().filter(lambda q: q > 0))
def test_volume_is_reached_tier_price_times_quantity_plus_its_flat(
    ts: tuple[Tier, ...], q: Decimal
) -> None:
    reached = next(t for t in ts if t.up_to is None or q <= t.up_to)
    r = rate(Charge(model="volume", currency="USD", tiers=ts), quantity=q)
    assert r.amount == q * reached.unit_amount + reached.flat_amount


@given(tiers())
def test_tiered_zero_usage_is_zero(ts: tuple[Tier, ...]) -> None:
    for model in ("graduated", "volume"):
        assert rate(Charge(model=model, currency="USD", tiers=ts), quantity=D(0)).amount == 0


@given(
    st.decimals(min_value=D("0.5"), max_value=10**4, places=2),
    amounts(2, 10**4),
    amounts(4, 10**4),
    quantities(),
)
def test_package_never_charges_for_fewer_units_than_used(
    size: Decimal, free: Decimal, price: Decimal, q: Decimal
) -> None:
    c = Charge(
        model="package", currency="USD", package_size=size, package_amount=price, free_units=free
    )
    billable = max(q - free, D(0))
    blocks = package_blocks(c, q)
    assert blocks == blocks.to_integral_value()
    assert blocks * size >= billable  # never fewer units than used
    assert (blocks - 1) * size < billable or blocks == 0  # and no block more than needed
    assert rate(c, quantity=q).amount == blocks * price


@given(
    amounts(12, 10**9),
    st.integers(min_value=1, max_value=366 * 86_400),
    st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8),
    CURRENCIES,
)
def test_prorated_parts_sum_to_the_whole_within_one_minor_unit_per_part(
    fee: Decimal, period: int, cuts: list[int], currency: str
) -> None:
    points = sorted({0, period, *(c % (period + 1) for c in cuts)})
    parts = [prorate(fee, b - a, period) for a, b in pairwise(points)]
    with localcontext(Context(prec=100)):  # parts keep 60 digits: equal up to 1e-55
        assert abs(sum(parts, D(0)) - fee) <= fee * D("1e-55")
    rounded = sum(round_to_minor(p, currency) for p in parts)
    assert abs(rounded - round_to_minor(fee, currency)) <= len(parts)


@given(
    st.lists(st.tuples(tiers(), quantities()), min_size=1, max_size=6),
    CURRENCIES,
)
@settings(max_examples=50)
def test_total_of_rounded_lines_equals_the_sum_of_its_lines(
    lines: list[tuple[tuple[Tier, ...], Decimal]], currency: str
) -> None:
    ratings = [
        rate(Charge(model="graduated", currency=currency, tiers=ts), quantity=q) for ts, q in lines
    ]
    for r in ratings:  # each line is the exact sum of its breakdown
        assert sum((d.amount for d in r.details), D(0)) == r.amount
    total = sum(r.amount_minor for r in ratings)
    assert minor_to_decimal(total, currency) == sum(
        (D(r.to_json()["amount"]) for r in ratings), D(0)
    )


@st.composite
def percentage_charges(draw: st.DrawFn) -> Charge:
    low = draw(st.none() | amounts(2, 5))
    high = draw(st.none() | amounts(2, 50))
    if low is not None and high is not None and low > high:
        low, high = high, low
    return Charge(
        model="percentage",
        currency="USD",
        rate=draw(amounts(3, 100)),
        fixed_amount=draw(amounts(2, 2)),
        free_units_per_events=draw(st.integers(min_value=0, max_value=5)),
        free_units_per_total_aggregation=draw(amounts(2, 500)),
        per_transaction_min_amount=low,
        per_transaction_max_amount=high,
    )


@given(percentage_charges(), st.lists(amounts(2, 10**4), max_size=30))
def test_percentage_never_negative_and_each_fee_within_min_max(
    c: Charge, events: list[Decimal]
) -> None:
    fees = percentage_fees(c, events)
    assert len(fees) == len(events)
    for f in fees:
        assert f.fee >= 0
        if f.free:
            assert f.fee == 0
            continue
        if c.per_transaction_min_amount is not None:
            assert f.fee >= c.per_transaction_min_amount
        if c.per_transaction_max_amount is not None:
            assert f.fee <= c.per_transaction_max_amount
    r = rate(c, events=events)
    assert r.amount >= 0
    assert r.amount == sum((f.fee for f in fees), D(0))
    assert sum((d.amount for d in r.details), D(0)) == r.amount
