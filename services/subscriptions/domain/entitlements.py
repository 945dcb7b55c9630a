"""Entitlement decisions: may an organisation use this much of a feature?"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class EntitlementReason(StrEnum):
    WITHIN_LIMIT = "within_limit"
    SOFT_LIMIT_EXCEEDED = "soft_limit_exceeded"
    HARD_LIMIT_EXCEEDED = "hard_limit_exceeded"
    FEATURE_NOT_IN_PLAN = "feature_not_in_plan"
    NO_ACTIVE_SUBSCRIPTION = "no_active_subscription"


@dataclass(frozen=True)
class FeatureLimit:
    feature_key: str
    unlimited: bool
    limit: Decimal | None
    hard: bool
    resets_each_period: bool
    metric_code: str

    @property
    def metered(self) -> bool:
        return bool(self.metric_code)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: EntitlementReason
    unlimited: bool = False
    limit: Decimal | None = None
    used: Decimal | None = None
    remaining: Decimal | None = None
    hard: bool | None = None


def decide(
    limit: FeatureLimit | None,
    *,
    subscribed: bool,
    metered_usage: Decimal,
    quantity: Decimal | None,
) -> Decision:
    """Metered features: allowed when usage so far plus ``quantity`` stays within the
    limit. Standing quantities (seats): allowed when ``quantity`` itself does.
    ``quantity`` None means the default: 1 for metered, 0 (just report) otherwise."""
    if not subscribed:
        return Decision(False, EntitlementReason.NO_ACTIVE_SUBSCRIPTION)
    if limit is None:
        return Decision(False, EntitlementReason.FEATURE_NOT_IN_PLAN)
    if limit.metered:
        wanted = Decimal(1) if quantity is None else quantity
        used = metered_usage
        total = used + wanted
    else:
        used = Decimal(0) if quantity is None else quantity
        total = used
    if limit.unlimited or limit.limit is None:
        return Decision(
            True, EntitlementReason.WITHIN_LIMIT, unlimited=True, used=used, hard=limit.hard
        )
    remaining = max(Decimal(0), limit.limit - used)
    if total <= limit.limit:
        reason, allowed = EntitlementReason.WITHIN_LIMIT, True
    elif limit.hard:
        reason, allowed = EntitlementReason.HARD_LIMIT_EXCEEDED, False
    else:
        reason, allowed = EntitlementReason.SOFT_LIMIT_EXCEEDED, True
    return Decision(allowed, reason, False, limit.limit, used, remaining, limit.hard)
