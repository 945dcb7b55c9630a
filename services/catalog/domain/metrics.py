"""Billable metrics: what usage events count and how, and when that may change."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.catalog.domain import reasons
from services.catalog.domain.values import Aggregation, MetricState, RoundingFunction, check_slug
from services.kit.errors import FailedPrecondition, Violations

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_PROPERTY_KEY_LENGTH = 128
MAX_ROUNDING_PRECISION = 12
MAX_ALIASES = 20
MAX_ALIAS_LENGTH = 128

# What UpdateMetric's mask may name; "code" is immutable and outputs are ignored.
MUTABLE_FIELDS = frozenset(
    {"name", "description", "aggregation", "property_key", "rounding", "aliases"}
)
# What changes the meaning of usage already counted, so frozen once in use.
DEFINING_FIELDS = ("aggregation", "property_key", "rounding")


@dataclass(frozen=True)
class Rounding:
    function: RoundingFunction
    precision: int


@dataclass(frozen=True)
class MetricDefinition:
    """The mutable part of a metric."""

    name: str
    description: str
    aggregation: Aggregation
    property_key: str
    rounding: Rounding | None
    # Other event names of this metric (another billing system's codes); never
    # defining, so editable while in use: they only route events here.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metric:
    metric_id: str
    code: str
    definition: MetricDefinition
    state: MetricState
    # Some published package version charges it or limits a feature by it.
    in_use: bool
    create_time: datetime
    update_time: datetime
    archive_time: datetime | None


@dataclass(frozen=True)
class MetricInput:
    """A metric as a caller sent it, before any rule was checked."""

    code: str = ""
    name: str = ""
    description: str = ""
    aggregation: Aggregation | None = None
    property_key: str = ""
    rounding_function: RoundingFunction | None = None
    rounding_precision: int = 0
    aliases: tuple[str, ...] = ()


def validate_definition(raw: MetricInput, path: str, v: Violations) -> MetricDefinition | None:
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
    if raw.aggregation is None:
        v.add(f"{path}.aggregation", "is required")
    elif raw.aggregation is Aggregation.COUNT:
        v.check(
            raw.property_key == "",
            f"{path}.property_key",
            "must be empty for a count aggregation (count events carry no value)",
        )
    elif not raw.property_key:
        v.add(f"{path}.property_key", f"is required for a {raw.aggregation} aggregation")
    elif len(raw.property_key) > MAX_PROPERTY_KEY_LENGTH or any(
        c.isspace() for c in raw.property_key
    ):
        v.add(
            f"{path}.property_key",
            f"must be at most {MAX_PROPERTY_KEY_LENGTH} characters without whitespace",
        )
    rounding: Rounding | None = None
    precision_ok = v.check(
        0 <= raw.rounding_precision <= MAX_ROUNDING_PRECISION,
        f"{path}.rounding.precision",
        f"must be between 0 and {MAX_ROUNDING_PRECISION}",
    )
    if raw.rounding_function is None:
        if precision_ok:
            v.check(
                raw.rounding_precision == 0,
                f"{path}.rounding.precision",
                "needs a rounding function",
            )
    else:
        rounding = Rounding(raw.rounding_function, raw.rounding_precision)
    _check_aliases(raw, path, v)
    if len(v.items) != before or raw.aggregation is None:
        return None
    return MetricDefinition(
        name=name,
        description=raw.description,
        aggregation=raw.aggregation,
        property_key=raw.property_key,
        rounding=rounding,
        aliases=tuple(raw.aliases),
    )


def _check_aliases(raw: MetricInput, path: str, v: Violations) -> None:
    # Another system's event names keep their own spelling ("API Request",
    # "api.request"), so only blanks and control characters are refused.
    v.check(
        len(raw.aliases) <= MAX_ALIASES,
        f"{path}.aliases",
        f"must have at most {MAX_ALIASES} entries",
    )
    seen: set[str] = set()
    for i, alias in enumerate(raw.aliases):
        field = f"{path}.aliases[{i}]"
        if not alias or alias != alias.strip():
            v.add(field, "must be non-empty without leading or trailing whitespace")
        elif len(alias) > MAX_ALIAS_LENGTH or not alias.isprintable():
            v.add(field, f"must be at most {MAX_ALIAS_LENGTH} printable characters")
        elif alias == raw.code:
            v.add(field, "is the metric's own code")
        elif alias in seen:
            v.add(field, "is listed twice")
        seen.add(alias)


def validate_new_metric(raw: MetricInput, v: Violations) -> MetricDefinition | None:
    """Rules of CreateMetric; field paths under ``metric``."""
    check_slug(raw.code, "metric.code", v)
    return validate_definition(raw, "metric", v)


def as_input(metric: Metric) -> MetricInput:
    d = metric.definition
    return MetricInput(
        code=metric.code,
        name=d.name,
        description=d.description,
        aggregation=d.aggregation,
        property_key=d.property_key,
        rounding_function=d.rounding.function if d.rounding else None,
        rounding_precision=d.rounding.precision if d.rounding else 0,
        aliases=d.aliases,
    )


def updated_definition(
    metric: Metric, changes: MetricInput, fields: frozenset[str], v: Violations
) -> MetricDefinition | None:
    """The definition after UpdateMetric, or None with violations recorded.

    Raises FAILED_PRECONDITION for an archived metric, and for a metric in use
    when aggregation, property key or rounding would actually change: sending
    the current values back (an empty mask with the whole resource) is allowed.
    """
    if metric.state is MetricState.ARCHIVED:
        raise FailedPrecondition(
            f"metric {metric.code!r} is archived and can no longer change",
            reason=reasons.METRIC_ARCHIVED,
            metadata={"metric_id": metric.metric_id, "state": metric.state.value},
        )
    if changes.code and changes.code != metric.code:
        v.add("metric.code", "is immutable")
    merged = as_input(metric)
    updates: dict[str, object] = {}
    for name in fields:
        if name == "rounding":
            updates["rounding_function"] = changes.rounding_function
            updates["rounding_precision"] = changes.rounding_precision
        else:
            updates[name] = getattr(changes, name)
    merged = replace(merged, **updates)  # type: ignore[arg-type]
    definition = validate_definition(merged, "metric", v)
    if definition is None or not metric.in_use:
        return definition
    changed = [
        f for f in DEFINING_FIELDS if getattr(definition, f) != getattr(metric.definition, f)
    ]
    if changed:
        raise FailedPrecondition(
            f"metric {metric.code!r} is used by a published package version:"
            f" only name and description may change (not {', '.join(changed)})",
            reason=reasons.METRIC_IN_USE,
            metadata={"metric_id": metric.metric_id, "fields": ",".join(changed)},
        )
    return definition
