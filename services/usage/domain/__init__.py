"""The usage domain: pure rules, no I/O.

``events`` validates and resolves incoming usage events, ``aggregation`` folds
events into period aggregates (the reference semantics the SQL must match),
``periods`` finds the billing period an event counts in.
"""

from services.usage.domain.aggregation import (
    AggregateState,
    Aggregation,
    StoredEvent,
    bucket_starts,
    fold,
    fold_into,
)
from services.usage.domain.events import (
    FUTURE_TOLERANCE,
    MAX_BATCH,
    MAX_KEY_LENGTH,
    BatchValidator,
    IncomingEvent,
    MetricView,
    ValidEvent,
    parse_value,
    validate_event,
)
from services.usage.domain.periods import (
    PeriodView,
    Placement,
    PlacementCache,
    SubscriptionState,
    SubscriptionView,
    resolve_subscription,
)
from services.usage.domain.reasons import Rejected, RejectionReason

__all__ = [
    "FUTURE_TOLERANCE",
    "MAX_BATCH",
    "MAX_KEY_LENGTH",
    "AggregateState",
    "Aggregation",
    "BatchValidator",
    "IncomingEvent",
    "MetricView",
    "PeriodView",
    "Placement",
    "PlacementCache",
    "Rejected",
    "RejectionReason",
    "StoredEvent",
    "SubscriptionState",
    "SubscriptionView",
    "ValidEvent",
    "bucket_starts",
    "fold",
    "fold_into",
    "parse_value",
    "resolve_subscription",
    "validate_event",
]
