"""The package editor's form: rows in, the catalog's PackageVersion out, violations on inputs."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from tally.catalog.v1 import resources_pb2 as pb

from console import catalog_forms as cf

amounts = st.decimals(min_value=0, max_value=10**6, places=4).map(str)
whole = st.integers(min_value=0, max_value=10**6)


def tiers_of(kind: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    price = "rate" if kind == "graduated_percentage" else "unit_amount"

    def build(bounds: list[int], prices: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"up_to": str(b), price: p, "flat_amount": "1.5"}
            for b, p in zip(sorted(set(bounds)), prices, strict=False)
        ]
        return [*rows, {price: prices[-1]}]  # the open-ended last tier

    return st.builds(
        build,
        st.lists(st.integers(1, 10**6), min_size=0, max_size=4),
        st.lists(amounts, min_size=5, max_size=5),
    )


charges = st.one_of(
    st.builds(lambda a: {"standard": {"unit_amount": a}}, amounts),
    *(st.builds(lambda t, k=k: {k: {"tiers": t}}, tiers_of(k)) for k in cf.TIER_FIELDS),
    st.builds(
        lambda s, a, f: {"package": {"package_size": s + 1, "package_amount": a, "free_units": f}},
        whole,
        amounts,
        whole,
    ),
    st.builds(
        lambda r, f, n, lo: {
            "percentage": {
                "rate": r,
                "fixed_amount": f,
                "free_units_per_events": n,
                **({"per_transaction_min_amount": lo} if lo else {}),
            }
        },
        amounts,
        amounts,
        whole,
        st.one_of(st.none(), amounts),
    ),
)


def charge(model: dict[str, Any], minimum: str | None, i: int) -> dict[str, Any]:
    row = {"metric_id": f"met_{i}", "display_name": f"Metric {i}", **model}
    return {**row, "minimum_amount": minimum} if minimum else row


versions = st.builds(
    lambda models, minimum, fee, limit: {
        "name": "Pro <b>",
        "currency_code": "USD",
        "billing_interval": "BILLING_INTERVAL_MONTHLY",
        "base_fee_amount": fee,
        "base_fee_timing": "BASE_FEE_TIMING_IN_ARREARS",
        "trial_days": 14,
        "charges": [charge(m, minimum, i) for i, m in enumerate(models)],
        "feature_limits": [
            {
                "feature_key": "api_calls",
                "limit": limit,
                "enforcement": "LIMIT_ENFORCEMENT_HARD",
                "resets_each_period": True,
                "metric_code": "api_calls",
            },
            {"feature_key": "sso", "unlimited": True},
        ],
    },
    st.lists(charges, max_size=3),
    st.one_of(st.none(), amounts),
    amounts,
    amounts,
)


def proto(body: dict[str, Any]) -> pb.PackageVersion:
    return json_format.ParseDict(body, pb.PackageVersion())


@given(versions)
def test_a_version_read_into_the_editor_and_saved_unchanged_is_the_same_version(
    version: dict[str, Any],
) -> None:
    stored = proto(version)
    # What the gateway answers: JSON names, int64 as strings.
    answer = json_format.MessageToDict(stored)
    body, errors = cf.draft_body(cf.from_version(answer))
    assert errors == {}
    assert proto(body) == stored


def test_posted_rows_become_the_draft_with_the_open_ended_last_tier() -> None:
    form = {
        "code": "ui_pro",
        "draft.name": "Pro",
        "draft.currency_code": "EUR",
        "draft.billing_interval": "BILLING_INTERVAL_MONTHLY",
        "draft.charges[0].metric_id": "met_1",
        "draft.charges[0].model": "graduated",
        "draft.charges[0].rendered_model": "graduated",
        "draft.charges[0].graduated.tiers[0].up_to": "100",
        "draft.charges[0].graduated.tiers[0].unit_amount": "0",
        "draft.charges[0].graduated.tiers[1].up_to": "",
        "draft.charges[0].graduated.tiers[1].unit_amount": "0.0004",
        "draft.charges[0].minimum_amount": "",
        "draft.feature_limits[0].feature_key": "api_calls",
        "draft.feature_limits[0].limit": "1000",
        "draft.feature_limits[0].enforcement": "LIMIT_ENFORCEMENT_SOFT",
        "draft.feature_limits[0].resets_each_period": "1",
        "draft.feature_limits[0].metric_code": "api_calls",
    }
    draft = cf.parse_form(form)
    assert draft.code == "ui_pro"
    body, errors = cf.draft_body(draft)
    assert errors == {}
    version = proto(body)
    tiers = version.charges[0].graduated.tiers
    assert [t.HasField("up_to") for t in tiers] == [True, False]
    assert tiers[1].unit_amount == "0.0004"
    assert not version.charges[0].HasField("minimum_amount")
    limit = version.feature_limits[0]
    assert limit.resets_each_period and not limit.unlimited and limit.limit == "1000"
    assert limit.enforcement == pb.LIMIT_ENFORCEMENT_SOFT


def test_a_change_of_model_keeps_the_rows_typed_under_the_old_one() -> None:
    draft = cf.parse_form(
        {
            "draft.charges[0].model": "volume",
            "draft.charges[0].rendered_model": "graduated",
            "draft.charges[0].graduated.tiers[0].up_to": "10",
            "draft.charges[0].graduated.tiers[0].unit_amount": "2",
        }
    )
    (charge,) = draft.charges
    assert charge.model == "volume" and charge.tiers == [{"up_to": "10", "unit_amount": "2"}]
    assert "volume" in cf.draft_body(draft)[0]["charges"][0]


def test_row_buttons_add_and_remove_rows_and_keep_the_last_tier_last() -> None:
    draft = cf.DraftForm(charges=[cf.ChargeForm(model="graduated", tiers=[{"unit_amount": "1"}])])
    assert cf.apply_action(draft, "add_tier:0")
    assert draft.charges[0].tiers == [{}, {"unit_amount": "1"}]
    assert cf.apply_action(draft, "remove_tier:0:0")
    assert draft.charges[0].tiers == [{"unit_amount": "1"}]
    assert cf.apply_action(draft, "add_charge") and len(draft.charges) == 2
    assert cf.apply_action(draft, "remove_charge:0") and draft.charges[0].model == "standard"
    assert cf.apply_action(draft, "add_limit") and len(draft.feature_limits) == 1
    assert cf.apply_action(draft, "remove_limit:0") and draft.feature_limits == []
    assert cf.apply_action(draft, "remove_tier:9:9")  # a stale row: nothing to remove
    assert not cf.apply_action(draft, "save")


def test_a_block_size_that_is_not_a_whole_number_is_refused_on_its_input() -> None:
    charge = cf.ChargeForm(model="package", values={"package_size": "2.5", "package_amount": "5"})
    _, errors = cf.charge_body(charge, "draft.charges[3]")
    assert list(errors) == ["draft.charges[3].package.package_size"]
    draft = cf.DraftForm(trial_days="two weeks")
    assert list(cf.draft_body(draft)[1]) == ["draft.trial_days"]


def test_preview_violations_land_on_the_charge_and_box_inputs() -> None:
    mapped = cf.preview_errors(
        {
            "charge.graduated.tiers[1].up_to": "must be greater than 100",
            "quantity": "is required",
            "event_values[2]": "not a decimal",
            "currency_code": "unknown",
        },
        index=2,
    )
    assert mapped == {
        "draft.charges[2].graduated.tiers[1].up_to": "must be greater than 100",
        "preview.quantity": "is required",
        "preview.event_values": "not a decimal",
        "draft.currency_code": "unknown",
    }


def test_violations_without_an_input_are_listed_apart() -> None:
    draft = cf.DraftForm(charges=[cf.ChargeForm(model="graduated", tiers=[{}, {}])])
    errors = {
        "draft.charges[0].graduated.tiers[1].up_to": "out of order",
        "draft.charges[0].graduated.tiers": "at least one tier",
        "update_mask.paths[0]": "unknown field",
    }
    assert cf.unplaced(errors, cf.input_names(draft)) == {
        "draft.charges[0].graduated.tiers": "at least one tier",
        "update_mask.paths[0]": "unknown field",
    }


def test_the_new_metric_form_becomes_create_metrics_metric_with_its_rounding() -> None:
    form = {
        "metric.code": "ui_gb",
        "metric.name": "GB",
        "metric.aggregation": "AGGREGATION_MAX",
        "metric.property_key": "gb",
        "metric.description": "",
        "metric.rounding.function": "ROUNDING_FUNCTION_CEIL",
        "metric.rounding.precision": "2",
    }
    body, errors = cf.metric_body(form)
    assert errors == {}
    metric = json_format.ParseDict(body, pb.BillableMetric())
    assert metric.rounding.function == pb.ROUNDING_FUNCTION_CEIL
    assert metric.rounding.precision == 2 and metric.property_key == "gb"
    assert "description" not in body  # empty inputs are not sent
    plain, _ = cf.metric_body(
        {**form, "metric.rounding.function": "", "metric.rounding.precision": ""}
    )
    assert "rounding" not in plain
    _, refused = cf.metric_body({**form, "metric.rounding.precision": "two"})
    assert list(refused) == ["metric.rounding.precision"]
