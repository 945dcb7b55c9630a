"""Other billing systems' usage APIs, each a codec onto ``RecordUsageBatch``.

A dialect decodes its wire format into ``UsageEvent`` messages for the API
key's org and encodes the per-event outcome in its own answer shape. The
ingestion itself (exactly once by ``(org, idempotency key)``, one result per
event) is the usage service's, unchanged. See docs/integrations.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from tally.usage.v1 import resources_pb2

# The usage service's own bound (RecordUsageBatch): checked here so a dialect
# refuses an oversize batch whole, in its own error shape.
MAX_BATCH = 1000

REJECTED = resources_pb2.USAGE_EVENT_STATUS_REJECTED
DUPLICATE = resources_pb2.USAGE_EVENT_STATUS_DUPLICATE
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DialectError(Exception):
    """A request the dialect cannot read: ``details`` maps a field (or an index) to its problems."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Outcome:
    status: str  # accepted | duplicate | rejected
    reason: str  # the UsageRejectionReason name, lower case, for a rejected event
    message: str


def outcome_of(result: resources_pb2.UsageEventResult) -> Outcome:
    if result.status == REJECTED:
        reason = resources_pb2.UsageRejectionReason.Name(result.reason)
        return Outcome(
            "rejected", reason.removeprefix("USAGE_REJECTION_REASON_").lower(), result.message
        )
    return Outcome("duplicate" if result.status == DUPLICATE else "accepted", "", "")


def property_text(value: Any) -> str | None:
    """A JSON property as the string UsageEvent.properties holds; None if not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def unix_time(value: Any) -> datetime | None:
    """Unix seconds (number or numeric string, fractional allowed), exactly; None if not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        # Through Decimal: a float's repr keeps the microseconds it was sent with.
        seconds = Decimal(repr(value) if isinstance(value, float) else str(value))
        if not seconds.is_finite():
            return None
        return EPOCH + timedelta(microseconds=int(seconds * 1_000_000))
    except (InvalidOperation, ValueError, OverflowError):
        return None
