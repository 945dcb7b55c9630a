"""Validating one incoming usage event against the local projections.

Pure: the caller loads the metrics and subscriptions a batch mentions once,
then every event is checked here without I/O, so a batch costs a handful of
queries whatever its size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from services.usage.domain.aggregation import Aggregation
from services.usage.domain.periods import (
    Placement,
    PlacementCache,
    SubscriptionView,
    resolve_subscription,
)
from services.usage.domain.reasons import Rejected, RejectionReason

MAX_BATCH = 1000
MAX_KEY_LENGTH = 128
# Clocks drift; usage stamped a little ahead of ours is still believable.
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_DECIMAL_PLACES = 12
# NUMERIC has no practical bound; a quantity this large is a producer bug.
MAX_ABS_VALUE = Decimal(10) ** 18


# IncomingEvent and ValidEvent are built once per event on the ingestion hot
# path: plain slotted dataclasses, because a frozen one's __init__ (one
# object.__setattr__ per field) costs several times as much. Nothing mutates them.
@dataclass(slots=True)
class IncomingEvent:
    """An event as a producer sent it, decoded from the wire but unchecked."""

    org_id: str
    metric_code: str
    idempotency_key: str
    value: str = ""
    event_time: datetime | None = None  # None: the time it was received
    subscription_id: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)
    # Set when the wire's event_time was no valid instant (event_time is None
    # then): the event is rejected alone instead of failing its batch.
    time_error: str = ""
    # The org's own id of the subscription (or a subscription id), resolved
    # by ``resolve_external_subscription`` before validation.
    external_subscription_id: str = ""


@dataclass(frozen=True)
class MetricView:
    """The usage service's copy of a billable metric (from catalog events)."""

    code: str
    aggregation: Aggregation
    property_key: str = ""
    active: bool = True


@dataclass(slots=True)
class ValidEvent:
    """An event ready to store: resolved to a subscription and open period."""

    org_id: str
    idempotency_key: str
    metric_code: str
    aggregation: Aggregation
    subscription_id: str
    period_start: datetime
    period_end: datetime
    event_time: datetime
    value: Decimal | None
    unique_value: str | None
    properties: Mapping[str, str]


def parse_value(text: str) -> Decimal | Rejected:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return Rejected(RejectionReason.INVALID_VALUE, f"value {text!r} is not a decimal number")
    if not value.is_finite():
        return Rejected(RejectionReason.INVALID_VALUE, f"value {text!r} is not a finite number")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        # Normalising drops trailing zeros: "1.5000000000000" is fine.
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
            return Rejected(
                RejectionReason.INVALID_VALUE,
                f"value {text!r} has more than {MAX_DECIMAL_PLACES} decimal places",
            )
    if abs(value) >= MAX_ABS_VALUE:
        return Rejected(RejectionReason.INVALID_VALUE, f"value {text!r} is out of range")
    return value


def _value_of(event: IncomingEvent, metric: MetricView) -> Decimal | Rejected | None:
    """The event's quantity for value aggregations; None where none is needed."""
    if not metric.aggregation.needs_value:
        return None
    text = event.value
    if not text and metric.property_key:
        # CloudEvents-style producers put the quantity in the metric's property.
        text = event.properties.get(metric.property_key, "")
    if not text:
        return Rejected(
            RejectionReason.INVALID_VALUE,
            f"metric {metric.code} ({metric.aggregation.value}) needs a value",
        )
    value = parse_value(text)
    if isinstance(value, Rejected):
        return value
    if value < 0 and not metric.aggregation.allows_negative:
        return Rejected(
            RejectionReason.NEGATIVE_VALUE,
            f"metric {metric.code} ({metric.aggregation.value}) takes no negative value",
        )
    return value


def _unique_value_of(event: IncomingEvent, metric: MetricView) -> str | Rejected | None:
    """The value a unique_count metric counts; None for the other aggregations."""
    if not metric.aggregation.needs_property:
        return None
    unique_value = event.properties.get(metric.property_key) if metric.property_key else None
    if not unique_value:
        return Rejected(
            RejectionReason.MISSING_PROPERTY,
            f"metric {metric.code} counts distinct values of property"
            f" {metric.property_key!r}, missing from the event",
        )
    return unique_value


def validate_event(
    event: IncomingEvent,
    *,
    now: datetime,
    metrics: Mapping[str, MetricView],
    subscriptions_by_id: Mapping[str, SubscriptionView],
    subscriptions_by_org: Mapping[str, Sequence[SubscriptionView]],
    placements: PlacementCache | None = None,
) -> ValidEvent | Rejected:
    """Every rule an event must pass, cheapest first; the first failure wins.

    ``placements``, shared by the events of one batch, saves resolving the
    same subscription and period again for each of them.
    """
    key = event.idempotency_key
    if not key or len(key) > MAX_KEY_LENGTH:
        return Rejected(
            RejectionReason.INVALID_IDEMPOTENCY_KEY,
            f"idempotency_key must be 1 to {MAX_KEY_LENGTH} characters",
        )
    if event.time_error:
        return Rejected(RejectionReason.INVALID_EVENT_TIME, event.time_error)
    metric = metrics.get(event.metric_code)
    if metric is None or not metric.active:
        return Rejected(
            RejectionReason.UNKNOWN_METRIC, f"no active metric with code {event.metric_code!r}"
        )
    value = _value_of(event, metric)
    if isinstance(value, Rejected):
        return value
    unique_value = _unique_value_of(event, metric)
    if isinstance(unique_value, Rejected):
        return unique_value
    at = event.event_time or now
    if at > now + FUTURE_TOLERANCE:
        return Rejected(
            RejectionReason.FUTURE_TIMESTAMP,
            f"event_time {at.isoformat()} is more than 5 minutes in the future",
        )
    if placements is not None:
        placement = placements.resolve(event.org_id, event.subscription_id, at)
    else:
        placement = resolve_subscription(
            event.org_id, event.subscription_id, at, subscriptions_by_id, subscriptions_by_org
        )
    if isinstance(placement, Rejected):
        return placement
    return _valid(event, metric, placement, at, value, unique_value)


def _valid(
    event: IncomingEvent,
    metric: MetricView,
    placement: Placement,
    at: datetime,
    value: Decimal | None,
    unique_value: str | None,
) -> ValidEvent:
    return ValidEvent(
        org_id=event.org_id,
        idempotency_key=event.idempotency_key,
        metric_code=metric.code,
        aggregation=metric.aggregation,
        subscription_id=placement.subscription_id,
        period_start=placement.period.start,
        period_end=placement.period.end,
        event_time=at,
        value=value,
        unique_value=unique_value,
        properties=event.properties,
    )


@dataclass(slots=True)
class _Group:
    """What every event of one (org, metric, subscription id) shares in a batch."""

    metric: MetricView
    subscription_id: str
    period_start: datetime
    period_end: datetime
    # The instants the placement holds for (``end`` None: open-ended).
    start: datetime
    end: datetime | None
    # A count: nothing of the event's own but its key and time to check.
    plain: bool


class BatchValidator:
    """``validate_event`` for the events of one batch, answering exactly as it would.

    Most of a batch's events repeat an (org, metric, subscription id) already
    seen: once one of them was placed, the metric lookup and the placement are
    known, and an event whose time falls in the same placement window only
    needs its own checks (key, value, property, future time). Anything else,
    including every rejection, goes through ``validate_event`` itself.
    """

    def __init__(
        self,
        *,
        now: datetime,
        metrics: Mapping[str, MetricView],
        subscriptions_by_id: Mapping[str, SubscriptionView],
        subscriptions_by_org: Mapping[str, Sequence[SubscriptionView]],
    ) -> None:
        self._now = now
        self._latest = now + FUTURE_TOLERANCE
        self._metrics = metrics
        self._by_id = subscriptions_by_id
        self._by_org = subscriptions_by_org
        self._placements = PlacementCache(subscriptions_by_id, subscriptions_by_org)
        self._groups: dict[tuple[str, str, str], _Group] = {}

    def validate(self, event: IncomingEvent) -> ValidEvent | Rejected:
        key = event.idempotency_key
        group = self._groups.get((event.org_id, event.metric_code, event.subscription_id))
        if group is not None and key and len(key) <= MAX_KEY_LENGTH and not event.time_error:
            at = event.event_time or self._now
            end = group.end
            if group.start <= at <= self._latest and (end is None or at < end):
                valid = self._fast(event, group, at)
                if valid is not None:
                    return valid
        outcome = validate_event(
            event,
            now=self._now,
            metrics=self._metrics,
            subscriptions_by_id=self._by_id,
            subscriptions_by_org=self._by_org,
            placements=self._placements,
        )
        if isinstance(outcome, ValidEvent):
            self._learn(event, outcome)
        return outcome

    @staticmethod
    def _fast(event: IncomingEvent, group: _Group, at: datetime) -> ValidEvent | None:
        """The event placed as its group, or None where it needs ``validate_event``."""
        metric = group.metric
        if group.plain:
            value: Decimal | None = None
            unique_value: str | None = None
        else:
            parsed = _value_of(event, metric)
            unique = _unique_value_of(event, metric)
            if isinstance(parsed, Rejected) or isinstance(unique, Rejected):
                return None
            value, unique_value = parsed, unique
        return ValidEvent(
            event.org_id,
            event.idempotency_key,
            metric.code,
            metric.aggregation,
            group.subscription_id,
            group.period_start,
            group.period_end,
            at,
            value,
            unique_value,
            event.properties,
        )

    def _learn(self, event: IncomingEvent, valid: ValidEvent) -> None:
        known = self._placements.window(event.org_id, event.subscription_id)
        if known is None:
            return
        placement, start, end = known
        if (
            placement.subscription_id != valid.subscription_id
            or placement.period.start != valid.period_start
        ):
            return
        metric = self._metrics[event.metric_code]
        aggregation = metric.aggregation
        self._groups[(event.org_id, event.metric_code, event.subscription_id)] = _Group(
            metric,
            valid.subscription_id,
            valid.period_start,
            valid.period_end,
            start,
            end,
            not aggregation.needs_value and not aggregation.needs_property,
        )
