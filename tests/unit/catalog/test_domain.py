"""The catalog's pure rules: metrics, every charge model, tiers, package versions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.catalog.domain.drafts import (
    ChargeInput,
    FeatureLimitInput,
    VersionInput,
    as_input,
    merge,
    validate_version,
)
from services.catalog.domain.metrics import (
    MUTABLE_FIELDS,
    Metric,
    MetricDefinition,
    MetricInput,
    Rounding,
    updated_definition,
    validate_new_metric,
)
from services.catalog.domain.packages import (
    MetricRef,
)
from services.catalog.domain.pricing import (
    ChargeModel,
    Graduated,
    GraduatedPercentage,
    PackagePricing,
    Percentage,
    Standard,
    Tier,
    Volume,
    parse_properties,
    properties_dict,
)
from services.catalog.domain.values import (
    Aggregation,
    BillingInterval,
    LimitEnforcement,
    MetricState,
    RoundingFunction,
)
from services.kit.currency import MINOR_UNITS, is_iso4217, minor_units
from services.kit.errors import FailedPrecondition, Violations

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def parse(model: ChargeModel, raw: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    v = Violations()
    result = parse_properties(model, raw, model.value, v)
    return result, {item.field: item.description for item in v.items}


# -- charge models -------------------------------------------------------------


def test_standard() -> None:
    props, errors = parse(ChargeModel.STANDARD, {"unit_amount": "0.000000000001"})
    assert props == Standard(Decimal("0.000000000001")) and errors == {}
    for bad, message in [
        ("", "is required"),
        ("-1", "negative"),
        ("abc", "not a decimal"),
        ("0.0000000000001", "12 decimal places"),
        ("NaN", "finite"),
        ("1E+100000", "digits before the decimal point"),
    ]:
        props, errors = parse(ChargeModel.STANDARD, {"unit_amount": bad})
        assert props is None
        assert message in errors["standard.unit_amount"]


@pytest.mark.parametrize("model", [ChargeModel.GRADUATED, ChargeModel.VOLUME])
def test_tiered_models_accept_ordered_tiers_with_an_open_last_tier(model: ChargeModel) -> None:
    raw = {
        "tiers": [
            {"up_to": "100", "unit_amount": "0", "flat_amount": ""},
            {"up_to": "1000.5", "unit_amount": "0.5", "flat_amount": "10"},
            {"unit_amount": "0.25"},
        ]
    }
    props, errors = parse(model, raw)
    assert errors == {}
    assert isinstance(props, Graduated | Volume)
    assert props.tiers == (
        Tier(Decimal("100"), Decimal("0"), Decimal("0")),
        Tier(Decimal("1000.5"), Decimal("0.5"), Decimal("10")),
        Tier(None, Decimal("0.25"), Decimal("0")),
    )
    again, _ = parse(model, properties_dict(props))
    assert again == props


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        ([], {"graduated.tiers"}),
        ([{"up_to": "10", "unit_amount": "1"}], {"graduated.tiers[0].up_to"}),
        (
            [{"unit_amount": "1"}, {"unit_amount": "1"}],
            {"graduated.tiers[0].up_to"},
        ),
        (
            [
                {"up_to": "10", "unit_amount": "1"},
                {"up_to": "10", "unit_amount": "1"},
                {"unit_amount": "1"},
            ],
            {"graduated.tiers[1].up_to"},
        ),
        (
            [{"up_to": "0", "unit_amount": "1"}, {"unit_amount": "1"}],
            {"graduated.tiers[0].up_to"},
        ),
        (
            [{"up_to": "10", "unit_amount": "-1", "flat_amount": "-2"}, {"unit_amount": ""}],
            {
                "graduated.tiers[0].unit_amount",
                "graduated.tiers[0].flat_amount",
                "graduated.tiers[1].unit_amount",
            },
        ),
        (
            [{"up_to": "x", "unit_amount": "1"}, {"up_to": "5", "unit_amount": "1"}],
            {"graduated.tiers[0].up_to", "graduated.tiers[1].up_to"},
        ),
        (
            [{"up_to": "1.0000000000001", "unit_amount": "1"}, {"unit_amount": "1"}],
            {"graduated.tiers[0].up_to"},
        ),
    ],
)
def test_tier_rules_name_the_bad_field(tiers: list[dict[str, str]], expected: set[str]) -> None:
    props, errors = parse(ChargeModel.GRADUATED, {"tiers": tiers})
    assert props is None
    assert set(errors) == expected


def test_out_of_order_message_names_the_previous_bound() -> None:
    _, errors = parse(
        ChargeModel.VOLUME,
        {
            "tiers": [
                {"up_to": "100", "unit_amount": "1"},
                {"up_to": "50", "unit_amount": "1"},
                {"unit_amount": "1"},
            ]
        },
    )
    assert "tiers[0].up_to (100)" in errors["volume.tiers[1].up_to"]


def test_package_model() -> None:
    props, errors = parse(
        ChargeModel.PACKAGE, {"package_size": "1000", "package_amount": "5", "free_units": "100"}
    )
    assert errors == {}
    assert props == PackagePricing(1000, Decimal(5), 100)
    _, errors = parse(
        ChargeModel.PACKAGE, {"package_size": "0", "package_amount": "", "free_units": "-1"}
    )
    assert set(errors) == {
        "package.package_size",
        "package.package_amount",
        "package.free_units",
    }


def test_percentage_model() -> None:
    good = {
        "rate": "2.9",
        "fixed_amount": "0.30",
        "free_units_per_events": "10",
        "free_units_per_total_aggregation": "500",
        "per_transaction_min_amount": "0.5",
        "per_transaction_max_amount": "0.5",
    }
    props, errors = parse(ChargeModel.PERCENTAGE, good)
    assert errors == {}
    assert isinstance(props, Percentage)
    assert props.per_transaction_min_amount == props.per_transaction_max_amount == Decimal("0.5")
    assert parse(ChargeModel.PERCENTAGE, properties_dict(props))[0] == props

    minimal, errors = parse(ChargeModel.PERCENTAGE, {"rate": "100"})
    assert errors == {}
    assert minimal == Percentage(Decimal(100), Decimal(0), 0, None, None, None)

    _, errors = parse(
        ChargeModel.PERCENTAGE,
        {
            "rate": "100.01",
            "fixed_amount": "-0.3",
            "free_units_per_events": "-1",
            "free_units_per_total_aggregation": "-5",
            "per_transaction_min_amount": "3",
            "per_transaction_max_amount": "2",
        },
    )
    assert set(errors) == {
        "percentage.rate",
        "percentage.fixed_amount",
        "percentage.free_units_per_events",
        "percentage.free_units_per_total_aggregation",
        "percentage.per_transaction_max_amount",
    }
    _, errors = parse(ChargeModel.PERCENTAGE, {"rate": ""})
    assert set(errors) == {"percentage.rate"}


def test_graduated_percentage_model() -> None:
    raw = {
        "tiers": [
            {"up_to": "10000", "rate": "3", "flat_amount": "0"},
            {"rate": "1.5", "flat_amount": "100"},
        ]
    }
    props, errors = parse(ChargeModel.GRADUATED_PERCENTAGE, raw)
    assert errors == {}
    assert isinstance(props, GraduatedPercentage)
    assert parse(ChargeModel.GRADUATED_PERCENTAGE, properties_dict(props))[0] == props
    _, errors = parse(
        ChargeModel.GRADUATED_PERCENTAGE,
        {
            "tiers": [
                {"up_to": "5", "rate": "101"},
                {"up_to": "6", "rate": "-1", "flat_amount": "-1"},
            ]
        },
    )
    assert set(errors) == {
        "graduated_percentage.tiers[0].rate",
        "graduated_percentage.tiers[1].up_to",
        "graduated_percentage.tiers[1].rate",
        "graduated_percentage.tiers[1].flat_amount",
    }


# -- tiers, by property --------------------------------------------------------

amounts = st.integers(min_value=0, max_value=10**10).map(lambda n: Decimal(n) / 10**4)


def bounds_of(min_size: int) -> st.SearchStrategy[list[Decimal]]:
    return st.lists(
        st.integers(min_value=1, max_value=10**12).map(lambda n: Decimal(n) / 1000),
        min_size=min_size,
        max_size=8,
        unique=True,
    )


bounds = bounds_of(0)


def _tiers(sorted_bounds: list[Decimal], units: list[Decimal]) -> list[dict[str, str]]:
    tiers: list[dict[str, str]] = [
        {"up_to": str(b), "unit_amount": str(u)} for b, u in zip(sorted_bounds, units, strict=False)
    ]
    tiers.append({"unit_amount": str(units[-1])})
    return tiers


@given(bounds, st.lists(amounts, min_size=9, max_size=9))
def test_any_increasing_tier_list_with_an_open_last_tier_validates(
    raw_bounds: list[Decimal], units: list[Decimal]
) -> None:
    tiers = _tiers(sorted(raw_bounds), units)
    for model in (ChargeModel.GRADUATED, ChargeModel.VOLUME):
        props, errors = parse(model, {"tiers": tiers})
        assert errors == {}
        assert isinstance(props, Graduated | Volume)
        assert len(props.tiers) == len(tiers)
        assert props.tiers[-1].up_to is None


@given(bounds_of(2), st.data())
def test_bounds_out_of_order_are_rejected(raw_bounds: list[Decimal], data: st.DataObject) -> None:
    ordered = sorted(raw_bounds)
    shuffled = data.draw(st.permutations(ordered))
    if shuffled == ordered:  # a sorted shuffle is fine; force one inversion instead
        i = data.draw(st.integers(min_value=0, max_value=len(ordered) - 2))
        shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    props, errors = parse(ChargeModel.GRADUATED, {"tiers": _tiers(shuffled, [Decimal(1)] * 9)})
    assert props is None
    assert errors
    assert all(field.endswith(".up_to") for field in errors)


@given(bounds_of(1), st.data())
def test_an_open_tier_anywhere_but_last_is_rejected(
    raw_bounds: list[Decimal], data: st.DataObject
) -> None:
    tiers = _tiers(sorted(raw_bounds), [Decimal(1)] * 9)
    i = data.draw(st.integers(min_value=0, max_value=len(tiers) - 2))
    del tiers[i]["up_to"]
    _, errors = parse(ChargeModel.VOLUME, {"tiers": tiers})
    assert f"volume.tiers[{i}].up_to" in errors


# -- metrics -------------------------------------------------------------------


def test_metric_rules() -> None:
    v = Violations()
    d = validate_new_metric(
        MetricInput(code="api_calls", name="API calls", aggregation=Aggregation.COUNT), v
    )
    assert not v and d is not None and d.property_key == ""
    v = Violations()
    validate_new_metric(
        MetricInput(
            code="9lives",
            name=" ",
            aggregation=Aggregation.UNIQUE_COUNT,
            rounding_precision=2,
        ),
        v,
    )
    assert {i.field for i in v.items} == {
        "metric.code",
        "metric.name",
        "metric.property_key",
        "metric.rounding.precision",
    }


def _metric(in_use: bool, state: MetricState = MetricState.ACTIVE) -> Metric:
    return Metric(
        metric_id="met_1",
        code="storage",
        definition=MetricDefinition(
            "Storage", "", Aggregation.MAX, "gb", Rounding(RoundingFunction.ROUND, 2)
        ),
        state=state,
        in_use=in_use,
        create_time=NOW,
        update_time=NOW,
        archive_time=None,
    )


def test_metric_in_use_changes_only_name_and_description() -> None:
    change = MetricInput(name="Peak storage", aggregation=Aggregation.SUM, property_key="gb")
    v = Violations()
    free = updated_definition(_metric(False), change, frozenset({"aggregation"}), v)
    assert free is not None and free.aggregation is Aggregation.SUM and free.name == "Storage"
    with pytest.raises(FailedPrecondition) as caught:
        updated_definition(_metric(True), change, frozenset({"aggregation"}), Violations())
    assert caught.value.reason == "METRIC_IN_USE"
    renamed = updated_definition(_metric(True), change, frozenset({"name"}), Violations())
    assert renamed is not None and renamed.name == "Peak storage"
    # The whole resource sent back unchanged but for its name passes too.
    same = MetricInput(
        name="New",
        aggregation=Aggregation.MAX,
        property_key="gb",
        rounding_function=RoundingFunction.ROUND,
        rounding_precision=2,
    )
    assert updated_definition(_metric(True), same, MUTABLE_FIELDS, Violations()) is not None
    with pytest.raises(FailedPrecondition) as caught:
        updated_definition(
            _metric(False, MetricState.ARCHIVED), change, frozenset({"name"}), Violations()
        )
    assert caught.value.reason == "METRIC_ARCHIVED"


# -- package versions ----------------------------------------------------------

ACTIVE = MetricRef("met_a", "api_calls", "API calls", MetricState.ACTIVE)
OLD = MetricRef("met_o", "old", "Old", MetricState.ARCHIVED)
BY_ID = {m.metric_id: m for m in (ACTIVE, OLD)}
BY_CODE = {m.code: m for m in (ACTIVE, OLD)}


def _validate(raw: VersionInput, charge_ids: dict[str, str] | None = None) -> tuple[Any, set[str]]:
    v = Violations()
    ids = iter(f"chg_{i}" for i in range(100))
    content = validate_version(
        raw,
        path="draft",
        metrics_by_id=BY_ID,
        metrics_by_code=BY_CODE,
        charge_ids=charge_ids or {},
        new_charge_id=lambda: next(ids),
        v=v,
    )
    return content, {i.field for i in v.items}


GOOD = VersionInput(
    name="Growth",
    currency_code="JPY",
    billing_interval=BillingInterval.YEARLY,
    base_fee_amount="0",
    charges=(
        ChargeInput(
            metric_id="met_a", model=ChargeModel.STANDARD, properties={"unit_amount": "0.01"}
        ),
    ),
    feature_limits=(
        FeatureLimitInput(
            feature_key="api_calls",
            limit="1000",
            enforcement=LimitEnforcement.SOFT,
            resets_each_period=True,
            metric_code="api_calls",
        ),
        FeatureLimitInput(feature_key="sso", unlimited=True),
    ),
)


def test_a_valid_version_and_its_round_trip() -> None:
    content, errors = _validate(GOOD, charge_ids={"met_a": "chg_kept"})
    assert errors == set()
    assert content.charges[0].charge_id == "chg_kept"
    assert content.charges[0].display_name == "API calls"
    assert content.charges[0].metric_code == "api_calls"
    assert content.feature_limits[1].limit is None
    again, errors = _validate(as_input(content), charge_ids={"met_a": "chg_kept"})
    assert errors == set() and again == content


def test_version_violations_name_each_field() -> None:
    raw = VersionInput(
        name="",
        currency_code="EURO",
        base_fee_amount="10",
        trial_days=400,
        charges=(
            ChargeInput(
                metric_id="met_o", model=ChargeModel.STANDARD, properties={"unit_amount": "1"}
            ),
            ChargeInput(
                metric_id="met_x", model=ChargeModel.STANDARD, properties={"unit_amount": "1"}
            ),
            ChargeInput(metric_id="met_a", model=None),
            ChargeInput(
                metric_id="met_a",
                model=ChargeModel.STANDARD,
                properties={"unit_amount": "1"},
                minimum_amount="-1",
            ),
        ),
        feature_limits=(
            FeatureLimitInput(feature_key="Seats", limit="1", enforcement=LimitEnforcement.HARD),
            FeatureLimitInput(feature_key="x", limit="", metric_code="old"),
            FeatureLimitInput(feature_key="x", unlimited=True, metric_code="gone"),
        ),
    )
    content, errors = _validate(raw)
    assert content is None
    assert errors == {
        "draft.name",
        "draft.currency_code",
        "draft.billing_interval",
        "draft.base_fee_timing",
        "draft.trial_days",
        "draft.charges[0].metric_id",
        "draft.charges[1].metric_id",
        "draft.charges[2].properties",
        "draft.charges[3].metric_id",
        "draft.charges[3].minimum_amount",
        "draft.feature_limits[0].feature_key",
        "draft.feature_limits[1].limit",
        "draft.feature_limits[1].enforcement",
        "draft.feature_limits[1].metric_code",
        "draft.feature_limits[2].feature_key",
        "draft.feature_limits[2].metric_code",
    }


def test_merge_takes_only_masked_fields() -> None:
    merged = merge(GOOD, VersionInput(name="New", currency_code="XXX"), frozenset({"name"}))
    assert (merged.name, merged.currency_code) == ("New", "JPY")


# -- currencies ----------------------------------------------------------------


def test_iso4217_reference_data() -> None:
    assert (minor_units("USD"), minor_units("JPY"), minor_units("KWD")) == (2, 0, 3)
    assert (minor_units("BHD"), minor_units("CLF"), minor_units("UYW")) == (3, 4, 4)
    assert is_iso4217("EUR") and not is_iso4217("usd") and not is_iso4217("XAU")
    assert not is_iso4217("HRK")  # withdrawn in 2023
    with pytest.raises(ValueError):
        minor_units("ABC")
    assert all(len(code) == 3 and code.isupper() for code in MINOR_UNITS)
    assert set(MINOR_UNITS.values()) == {0, 2, 3, 4}
    assert len(MINOR_UNITS) > 150
