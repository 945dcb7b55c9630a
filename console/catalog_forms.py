"""The package editor's form, pure: HTML form fields <-> the catalog's ``PackageVersion``.

Inputs are named by the request's field paths (``draft.charges[0].graduated.tiers[1].up_to``),
so a violation the catalog names lands on the input that caused it. The body
sent to the gateway uses the same proto field names (the gateway's ParseDict
takes them as well as the JSON names); answers come back in JSON names
(camelCase) and are read back with :func:`from_version`.

Tier rows, charges and feature limits are plain form rows: "add"/"remove"
buttons post the form, the page comes back with one row more or less and
everything typed kept (no script).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DRAFT = "draft"
MODELS = {
    "standard": "Per unit (standard)",
    "graduated": "Graduated tiers",
    "volume": "Volume tiers",
    "package": "Package (per block of N units)",
    "percentage": "Percentage of amounts",
    "graduated_percentage": "Graduated percentage tiers",
}
# The fields of each model's properties message (resources.proto).
TIER_FIELDS = {
    "graduated": ("up_to", "unit_amount", "flat_amount"),
    "volume": ("up_to", "unit_amount", "flat_amount"),
    "graduated_percentage": ("up_to", "rate", "flat_amount"),
}
SCALAR_FIELDS = {
    "standard": ("unit_amount",),
    "package": ("package_size", "package_amount", "free_units"),
    "percentage": (
        "rate",
        "fixed_amount",
        "free_units_per_events",
        "free_units_per_total_aggregation",
        "per_transaction_min_amount",
        "per_transaction_max_amount",
    ),
}
# int64 fields: checked here, since a ParseError would not name the row.
INTEGER_FIELDS = frozenset({"package_size", "free_units", "free_units_per_events"})
INTERVALS = {
    "BILLING_INTERVAL_MONTHLY": "Monthly",
    "BILLING_INTERVAL_YEARLY": "Yearly",
    "BILLING_INTERVAL_WEEKLY": "Weekly",
}
TIMINGS = {
    "BASE_FEE_TIMING_IN_ADVANCE": "In advance",
    "BASE_FEE_TIMING_IN_ARREARS": "In arrears",
}
ENFORCEMENTS = {"LIMIT_ENFORCEMENT_HARD": "Hard (deny)", "LIMIT_ENFORCEMENT_SOFT": "Soft (report)"}
ROUNDINGS = {
    "ROUNDING_FUNCTION_ROUND": "round half up",
    "ROUNDING_FUNCTION_CEIL": "round up (ceil)",
    "ROUNDING_FUNCTION_FLOOR": "round down (floor)",
}
AGGREGATIONS = {
    "AGGREGATION_COUNT": "count",
    "AGGREGATION_SUM": "sum",
    "AGGREGATION_MAX": "max",
    "AGGREGATION_UNIQUE_COUNT": "unique count",
    "AGGREGATION_LATEST": "latest",
}

_CHARGE = re.compile(r"^draft\.charges\[(\d+)\]\.(.+)$")
_TIER = re.compile(r"^(\w+)\.tiers\[(\d+)\]\.(\w+)$")
_LIMIT = re.compile(r"^draft\.feature_limits\[(\d+)\]\.(\w+)$")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass
class ChargeForm:
    metric_id: str = ""
    display_name: str = ""
    model: str = "standard"
    minimum_amount: str = ""
    values: dict[str, str] = field(default_factory=dict)
    # Rows of the tiered models; a row keeps every tier field so a change of
    # model (graduated -> volume) keeps what was typed.
    tiers: list[dict[str, str]] = field(default_factory=list)

    @property
    def tiered(self) -> bool:
        return self.model in TIER_FIELDS


@dataclass
class LimitForm:
    feature_key: str = ""
    unlimited: bool = False
    limit: str = ""
    enforcement: str = ""
    resets_each_period: bool = False
    metric_code: str = ""


@dataclass
class DraftForm:
    code: str = ""
    name: str = ""
    description: str = ""
    currency_code: str = "USD"
    billing_interval: str = "BILLING_INTERVAL_MONTHLY"
    base_fee_amount: str = ""
    base_fee_timing: str = "BASE_FEE_TIMING_IN_ADVANCE"
    trial_days: str = ""
    charges: list[ChargeForm] = field(default_factory=list)
    feature_limits: list[LimitForm] = field(default_factory=list)


_TOP = ("name", "description", "currency_code", "billing_interval", "base_fee_amount")
_TOP_MORE = ("base_fee_timing", "trial_days")


def _rows(found: dict[int, dict[str, str]]) -> list[dict[str, str]]:
    return [found[i] for i in sorted(found)]


def parse_form(form: Mapping[str, Any]) -> DraftForm:
    """The editor's fields as posted, whatever their number of rows."""
    text = {str(k): str(v) for k, v in form.items()}
    draft = DraftForm(code=text.get("code", "").strip())
    for name in (*_TOP, *_TOP_MORE):
        setattr(draft, name, text.get(f"{DRAFT}.{name}", "").strip())
    charges: dict[int, dict[str, str]] = {}
    tiers: dict[int, dict[int, dict[str, str]]] = {}
    limits: dict[int, dict[str, str]] = {}
    for key, value in text.items():
        if match := _CHARGE.match(key):
            index, rest = int(match[1]), match[2]
            row = charges.setdefault(index, {})
            if tier := _TIER.match(rest):
                # Rows are kept whatever model named them, so a change of model keeps them.
                tiers.setdefault(index, {}).setdefault(int(tier[2]), {})[tier[3]] = value.strip()
            else:
                row[rest] = value.strip()
        elif match := _LIMIT.match(key):
            limits.setdefault(int(match[1]), {})[match[2]] = value.strip()
    for index in sorted(charges):
        row = charges[index]
        model = row.get("model", "standard")
        rendered = row.get("rendered_model", model)
        prefix = f"{rendered}."
        values = {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
        draft.charges.append(
            ChargeForm(
                metric_id=row.get("metric_id", ""),
                display_name=row.get("display_name", ""),
                model=model if model in MODELS else "standard",
                minimum_amount=row.get("minimum_amount", ""),
                values=values,
                tiers=_rows(tiers.get(index, {})),
            )
        )
    for index in sorted(limits):
        row = limits[index]
        draft.feature_limits.append(
            LimitForm(
                feature_key=row.get("feature_key", ""),
                unlimited=bool(row.get("unlimited")),
                limit=row.get("limit", ""),
                enforcement=row.get("enforcement", ""),
                resets_each_period=bool(row.get("resets_each_period")),
                metric_code=row.get("metric_code", ""),
            )
        )
    return draft


def _snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {_CAMEL.sub("_", str(k)).lower(): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def from_version(version: Mapping[str, Any] | None, code: str = "") -> DraftForm:
    """A ``PackageVersion`` answer (JSON names) as the editor shows it."""
    v = _snake(dict(version or {}))
    draft = DraftForm(code=code)
    for name in (*_TOP, *_TOP_MORE):
        setattr(draft, name, _text(v.get(name)))
    for charge in v.get("charges") or []:
        model = next((m for m in MODELS if m in charge), "standard")
        props = charge.get(model) or {}
        draft.charges.append(
            ChargeForm(
                metric_id=_text(charge.get("metric_id")),
                display_name=_text(charge.get("display_name")),
                model=model,
                minimum_amount=_text(charge.get("minimum_amount")),
                values={k: _text(x) for k, x in props.items() if k != "tiers"},
                tiers=[{k: _text(x) for k, x in t.items()} for t in props.get("tiers") or []],
            )
        )
    for limit in v.get("feature_limits") or []:
        draft.feature_limits.append(
            LimitForm(
                feature_key=_text(limit.get("feature_key")),
                unlimited=bool(limit.get("unlimited")),
                limit=_text(limit.get("limit")),
                enforcement=_text(limit.get("enforcement")),
                resets_each_period=bool(limit.get("resets_each_period")),
                metric_code=_text(limit.get("metric_code")),
            )
        )
    return draft


def charge_body(charge: ChargeForm, prefix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """One ``Charge`` (proto names) and the violations found before sending it."""
    errors: dict[str, str] = {}
    props: dict[str, Any] = {}
    base = f"{prefix}.{charge.model}"
    if charge.tiered:
        rows = []
        for tier in charge.tiers:
            row: dict[str, Any] = {}
            for name in TIER_FIELDS[charge.model]:
                if value := tier.get(name, ""):
                    row[name] = value
            rows.append(row)
        props["tiers"] = rows
    else:
        for name in SCALAR_FIELDS[charge.model]:
            value = charge.values.get(name, "")
            if not value:
                continue  # unset: 0, or none for the optional bounds
            if name in INTEGER_FIELDS and not value.isdigit():
                errors[f"{base}.{name}"] = "a whole number of units (0 or more)"
                continue
            props[name] = value
    body: dict[str, Any] = {"metric_id": charge.metric_id, charge.model: props}
    if charge.display_name:
        body["display_name"] = charge.display_name
    if charge.minimum_amount:
        body["minimum_amount"] = charge.minimum_amount
    return body, errors


def draft_body(draft: DraftForm) -> tuple[dict[str, Any], dict[str, str]]:
    """The whole ``PackageVersion`` (an empty update mask replaces every draft field)."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {}
    for name in (*_TOP, "base_fee_timing"):
        if value := getattr(draft, name):
            body[name] = value
    if draft.trial_days:
        if draft.trial_days.isdigit():
            body["trial_days"] = int(draft.trial_days)
        else:
            errors[f"{DRAFT}.trial_days"] = "a whole number of days (0 to 365)"
    charges = []
    for i, charge in enumerate(draft.charges):
        one, found = charge_body(charge, f"{DRAFT}.charges[{i}]")
        charges.append(one)
        errors.update(found)
    body["charges"] = charges
    limits = []
    for limit in draft.feature_limits:
        row: dict[str, Any] = {
            "feature_key": limit.feature_key,
            "unlimited": limit.unlimited,
            "resets_each_period": limit.resets_each_period,
        }
        if limit.limit:
            row["limit"] = limit.limit
        if limit.enforcement:
            row["enforcement"] = limit.enforcement
        if limit.metric_code:
            row["metric_code"] = limit.metric_code
        limits.append(row)
    body["feature_limits"] = limits
    return body, errors


ROW_ACTIONS = frozenset(
    {
        "add_charge",
        "remove_charge",
        "add_tier",
        "remove_tier",
        "add_limit",
        "remove_limit",
        "refresh",
    }
)


def apply_action(draft: DraftForm, action: str) -> bool:
    """Add or remove a row as the pressed button says; False when it is not a row action.

    A row button naming a row that is gone (a stale page) changes nothing, and
    is still a row action: it never falls through to saving.
    """
    verb, _, args = action.partition(":")
    if verb not in ROW_ACTIONS:
        return False
    at = [int(a) for a in args.split(":") if a.isdigit()]
    charge = draft.charges[at[0]] if at and at[0] < len(draft.charges) else None
    if verb == "add_charge":
        draft.charges.append(ChargeForm())
    elif verb == "remove_charge" and charge is not None:
        del draft.charges[at[0]]
    elif verb == "add_tier" and charge is not None:
        # The open-ended last tier stays last: the new row goes before it.
        charge.tiers.insert(max(len(charge.tiers) - 1, 0), {})
        if len(charge.tiers) == 1:
            charge.tiers.append({})
    elif verb == "remove_tier" and charge is not None and len(at) == 2:
        if at[1] < len(charge.tiers):
            del charge.tiers[at[1]]
    elif verb == "add_limit":
        draft.feature_limits.append(LimitForm())
    elif verb == "remove_limit" and at and at[0] < len(draft.feature_limits):
        del draft.feature_limits[at[0]]
    return True


def ready_to_show(draft: DraftForm) -> DraftForm:
    """A tiered charge is drawn with at least its open-ended last row."""
    for charge in draft.charges:
        if charge.tiered and not charge.tiers:
            charge.tiers.append({})
    return draft


def preview_errors(violations: Mapping[str, str], index: int) -> dict[str, str]:
    """PreviewCharge's violations (``charge.…``, ``quantity``) on the editor's inputs."""
    mapped: dict[str, str] = {}
    for name, text in violations.items():
        if name == "charge" or name.startswith(("charge.", "charge[")):
            target = f"{DRAFT}.charges[{index}]{name.removeprefix('charge')}"
        elif name == "currency_code":
            target = f"{DRAFT}.currency_code"
        else:  # quantity, event_values[i]
            target = f"preview.{name.split('[')[0]}"
        mapped[target] = f"{mapped[target]}; {text}" if target in mapped else text
    return mapped


def input_names(draft: DraftForm) -> list[str]:
    """Every input the editor draws for this draft (errors naming none are listed apart)."""
    names = [f"{DRAFT}.{n}" for n in (*_TOP, *_TOP_MORE)]
    names += ["code", "preview.quantity", "preview.event_values"]
    for i, charge in enumerate(draft.charges):
        p = f"{DRAFT}.charges[{i}]"
        names += [f"{p}.metric_id", f"{p}.display_name", f"{p}.minimum_amount"]
        if charge.tiered:
            names += [
                f"{p}.{charge.model}.tiers[{j}].{n}"
                for j in range(len(charge.tiers))
                for n in TIER_FIELDS[charge.model]
            ]
        else:
            names += [f"{p}.{charge.model}.{n}" for n in SCALAR_FIELDS[charge.model]]
    for k in range(len(draft.feature_limits)):
        p = f"{DRAFT}.feature_limits[{k}]"
        names += [f"{p}.{n}" for n in LimitForm.__dataclass_fields__]
    return names


def placed(field_name: str, name: str) -> bool:
    """The rule of the ``field_error`` macro: a field, or anything below it."""
    return field_name == name or field_name.startswith((f"{name}.", f"{name}["))


def unplaced(errors: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    known = list(names)
    return {f: t for f, t in errors.items() if not any(placed(f, n) for n in known)}


def metric_body(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """CreateMetric's ``metric`` from the "New metric" form (inputs named ``metric.<field>``)."""
    metric: dict[str, Any] = {
        f: form[f"metric.{f}"]
        for f in ("code", "name", "description", "aggregation", "property_key")
        if form.get(f"metric.{f}")
    }
    errors: dict[str, str] = {}
    function = form.get("metric.rounding.function", "")
    precision = form.get("metric.rounding.precision", "")
    if function or precision:
        rounding: dict[str, Any] = {"function": function} if function else {}
        if precision.isdigit():
            rounding["precision"] = int(precision)
        elif precision:
            errors["metric.rounding.precision"] = "a whole number of decimal places (0 to 12)"
        metric["rounding"] = rounding
    return metric, errors


def parse_event_values(text: str) -> list[str]:
    return [v for v in re.split(r"[\s,;]+", text) if v]
