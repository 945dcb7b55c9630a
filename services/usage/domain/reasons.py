"""Why an event is rejected; the names are the proto enum's without prefix."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RejectionReason(enum.StrEnum):
    """Stable API: the ``reason`` label of ``billing.usage.dropped``."""

    UNKNOWN_METRIC = "UNKNOWN_METRIC"
    NO_ACTIVE_SUBSCRIPTION = "NO_ACTIVE_SUBSCRIPTION"
    UNKNOWN_SUBSCRIPTION = "UNKNOWN_SUBSCRIPTION"
    INVALID_VALUE = "INVALID_VALUE"
    NEGATIVE_VALUE = "NEGATIVE_VALUE"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    PERIOD_CLOSED = "PERIOD_CLOSED"
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    MISSING_PROPERTY = "MISSING_PROPERTY"
    INVALID_EVENT_TIME = "INVALID_EVENT_TIME"


@dataclass(frozen=True)
class Rejected:
    reason: RejectionReason
    message: str
