"""Drafts of package versions: what a caller sends, and the rules it must pass.

Every save of a draft validates it whole, so a draft is always publishable
except when a metric it uses was archived after it was saved (checked again
at publish).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from services.catalog.domain.packages import Charge, FeatureLimit, MetricRef, VersionContent
from services.catalog.domain.pricing import ChargeModel, model_of, parse_properties, properties_dict
from services.catalog.domain.values import (
    BaseFeeTiming,
    BillingInterval,
    LimitEnforcement,
    MetricState,
    check_slug,
    decimal_text,
    parse_decimal,
)
from services.kit.currency import is_iso4217
from services.kit.errors import Violations

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_TRIAL_DAYS = 365
MAX_CHARGES = 100
MAX_FEATURE_LIMITS = 200

# What UpdatePackage's mask may name (the draft's fields).
MUTABLE_FIELDS = frozenset(
    {
        "name",
        "description",
        "currency_code",
        "billing_interval",
        "base_fee_amount",
        "base_fee_timing",
        "trial_days",
        "charges",
        "feature_limits",
    }
)


@dataclass(frozen=True)
class ChargeInput:
    metric_id: str = ""
    display_name: str = ""
    model: ChargeModel | None = None
    properties: Mapping[str, Any] | None = None
    minimum_amount: str | None = None


@dataclass(frozen=True)
class FeatureLimitInput:
    feature_key: str = ""
    unlimited: bool = False
    limit: str = ""
    enforcement: LimitEnforcement | None = None
    resets_each_period: bool = False
    metric_code: str = ""


@dataclass(frozen=True)
class VersionInput:
    """A draft as a caller sent it, before any rule was checked."""

    name: str = ""
    description: str = ""
    currency_code: str = ""
    billing_interval: BillingInterval | None = None
    base_fee_amount: str = ""
    base_fee_timing: BaseFeeTiming | None = None
    trial_days: int = 0
    charges: tuple[ChargeInput, ...] = ()
    feature_limits: tuple[FeatureLimitInput, ...] = ()


def referenced_metrics(raw: VersionInput) -> tuple[set[str], set[str]]:
    """Metric ids of the charges and metric codes of the feature limits."""
    ids = {c.metric_id for c in raw.charges if c.metric_id}
    codes = {f.metric_code for f in raw.feature_limits if f.metric_code}
    return ids, codes


def validate_version(
    raw: VersionInput,
    *,
    path: str,
    metrics_by_id: Mapping[str, MetricRef],
    metrics_by_code: Mapping[str, MetricRef],
    charge_ids: Mapping[str, str],
    new_charge_id: Callable[[], str],
    v: Violations,
) -> VersionContent | None:
    """The validated content of a draft, or None with every violation recorded.

    ``charge_ids`` maps metric id -> charge id of the version this draft
    replaces, so a charge carried over keeps its id (invoice lines refer to it).
    """
    before = len(v.items)
    name = raw.name.strip()
    if not name:
        v.add(f"{path}.name", "is required")
    elif len(name) > MAX_NAME_LENGTH:
        v.add(f"{path}.name", f"must be at most {MAX_NAME_LENGTH} characters")
    v.check(
        len(raw.description) <= MAX_DESCRIPTION_LENGTH,
        f"{path}.description",
        f"must be at most {MAX_DESCRIPTION_LENGTH} characters",
    )
    if not raw.currency_code:
        v.add(f"{path}.currency_code", "is required")
    elif not is_iso4217(raw.currency_code):
        v.add(
            f"{path}.currency_code",
            f"{raw.currency_code!r} is not an active ISO 4217 code (upper case, e.g. USD)",
        )
    v.check(raw.billing_interval is not None, f"{path}.billing_interval", "is required")
    base_fee = parse_decimal(
        raw.base_fee_amount, f"{path}.base_fee_amount", v, required=False
    ) or Decimal(0)
    timing = raw.base_fee_timing
    if timing is None:
        # A usage-only plan has nothing to time; a real fee must say when it is due.
        v.check(
            base_fee == 0,
            f"{path}.base_fee_timing",
            "is required when base_fee_amount is not zero",
        )
        timing = BaseFeeTiming.IN_ADVANCE
    v.check(
        0 <= raw.trial_days <= MAX_TRIAL_DAYS,
        f"{path}.trial_days",
        f"must be between 0 and {MAX_TRIAL_DAYS}",
    )
    charges = _charges(raw, path, metrics_by_id, charge_ids, new_charge_id, v)
    limits = _feature_limits(raw, path, metrics_by_code, v)
    if len(v.items) != before or raw.billing_interval is None:
        return None
    return VersionContent(
        name=name,
        description=raw.description,
        currency_code=raw.currency_code,
        billing_interval=raw.billing_interval,
        base_fee_amount=base_fee,
        base_fee_timing=timing,
        trial_days=raw.trial_days,
        charges=charges,
        feature_limits=limits,
    )


def _charges(
    raw: VersionInput,
    path: str,
    metrics: Mapping[str, MetricRef],
    charge_ids: Mapping[str, str],
    new_charge_id: Callable[[], str],
    v: Violations,
) -> tuple[Charge, ...]:
    if len(raw.charges) > MAX_CHARGES:
        v.add(f"{path}.charges", f"at most {MAX_CHARGES} charges per version")
    out: list[Charge] = []
    seen: dict[str, int] = {}
    for i, charge in enumerate(raw.charges):
        at = f"{path}.charges[{i}]"
        metric = metrics.get(charge.metric_id)
        if not charge.metric_id:
            v.add(f"{at}.metric_id", "is required")
        elif metric is None:
            v.add(f"{at}.metric_id", f"no billable metric has id {charge.metric_id!r}")
        elif metric.state is MetricState.ARCHIVED:
            v.add(f"{at}.metric_id", f"metric {metric.code!r} is archived")
        elif charge.metric_id in seen:
            v.add(
                f"{at}.metric_id",
                f"metric {metric.code!r} is already charged by charges[{seen[charge.metric_id]}]"
                " (at most one charge per metric)",
            )
        else:
            seen[charge.metric_id] = i
        v.check(
            len(charge.display_name) <= MAX_NAME_LENGTH,
            f"{at}.display_name",
            f"must be at most {MAX_NAME_LENGTH} characters",
        )
        properties = None
        if charge.model is None:
            v.add(
                f"{at}.properties",
                "set exactly one charge model: standard, graduated, volume, package,"
                " percentage or graduated_percentage",
            )
        else:
            properties = parse_properties(
                charge.model, charge.properties or {}, f"{at}.{charge.model.value}", v
            )
        minimum = parse_decimal(charge.minimum_amount, f"{at}.minimum_amount", v, required=False)
        if properties is not None and metric is not None:
            out.append(
                Charge(
                    charge_id=charge_ids.get(metric.metric_id) or new_charge_id(),
                    metric_id=metric.metric_id,
                    metric_code=metric.code,
                    display_name=charge.display_name.strip() or metric.name,
                    properties=properties,
                    minimum_amount=minimum,
                )
            )
    return tuple(out)


def _feature_limits(
    raw: VersionInput, path: str, metrics: Mapping[str, MetricRef], v: Violations
) -> tuple[FeatureLimit, ...]:
    if len(raw.feature_limits) > MAX_FEATURE_LIMITS:
        v.add(f"{path}.feature_limits", f"at most {MAX_FEATURE_LIMITS} feature limits")
    out: list[FeatureLimit] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw.feature_limits):
        at = f"{path}.feature_limits[{i}]"
        ok = check_slug(item.feature_key, f"{at}.feature_key", v)
        if ok and item.feature_key in seen:
            v.add(
                f"{at}.feature_key",
                f"{item.feature_key!r} is already limited by feature_limits"
                f"[{seen[item.feature_key]}]",
            )
        seen.setdefault(item.feature_key, i)
        limit = None
        if not item.unlimited:
            limit = parse_decimal(item.limit, f"{at}.limit", v, required=True)
        enforcement = item.enforcement
        if enforcement is None:
            # Unlimited features are never enforced; anything else must say how.
            v.check(item.unlimited, f"{at}.enforcement", "is required (hard or soft)")
            enforcement = LimitEnforcement.HARD
        if item.metric_code:
            metric = metrics.get(item.metric_code)
            if metric is None:
                v.add(f"{at}.metric_code", f"no billable metric has code {item.metric_code!r}")
            elif metric.state is MetricState.ARCHIVED:
                v.add(f"{at}.metric_code", f"metric {metric.code!r} is archived")
        out.append(
            FeatureLimit(
                feature_key=item.feature_key,
                limit=limit,
                enforcement=enforcement,
                resets_each_period=item.resets_each_period,
                metric_code=item.metric_code,
            )
        )
    return tuple(out)


def as_input(content: VersionContent) -> VersionInput:
    """The input that would produce ``content``: the base an update mask edits."""
    return VersionInput(
        name=content.name,
        description=content.description,
        currency_code=content.currency_code,
        billing_interval=content.billing_interval,
        base_fee_amount=decimal_text(content.base_fee_amount),
        base_fee_timing=content.base_fee_timing,
        trial_days=content.trial_days,
        charges=tuple(
            ChargeInput(
                metric_id=c.metric_id,
                display_name=c.display_name,
                model=model_of(c.properties),
                properties=properties_dict(c.properties),
                minimum_amount=None if c.minimum_amount is None else decimal_text(c.minimum_amount),
            )
            for c in content.charges
        ),
        feature_limits=tuple(
            FeatureLimitInput(
                feature_key=f.feature_key,
                unlimited=f.limit is None,
                limit="" if f.limit is None else decimal_text(f.limit),
                enforcement=f.enforcement,
                resets_each_period=f.resets_each_period,
                metric_code=f.metric_code,
            )
            for f in content.feature_limits
        ),
    )


def merge(base: VersionInput, changes: VersionInput, fields: frozenset[str]) -> VersionInput:
    """``base`` with the fields named in an update mask taken from ``changes``."""
    return replace(base, **{name: getattr(changes, name) for name in fields})
