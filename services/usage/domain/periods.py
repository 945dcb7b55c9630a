"""Which subscription and billing period an event counts in.

The usage service knows subscriptions and their periods only from the
subscriptions service's events (a local projection), so this works on a
snapshot of that projection passed in by the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.usage.domain.reasons import Rejected, RejectionReason


class SubscriptionState(enum.StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELED = "canceled"


@dataclass(frozen=True)
class PeriodView:
    start: datetime  # inclusive; with the subscription, the period's identity
    end: datetime  # exclusive
    closed: bool = False

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True)
class SubscriptionView:
    subscription_id: str
    org_id: str
    state: SubscriptionState
    # Known periods, in start order.
    periods: Sequence[PeriodView] = ()
    # When the current pause started (paused only).
    pause_time: datetime | None = None
    # When a canceled subscription ended.
    end_time: datetime | None = None
    # The org's own id for it (Subscription.external_id); "" when none.
    external_id: str = ""

    def takes_usage_at(self, at: datetime) -> bool:
        """Trialing, active and past-due take usage; paused and canceled only before."""
        if self.state is SubscriptionState.PAUSED:
            return self.pause_time is not None and at < self.pause_time
        if self.state is SubscriptionState.CANCELED:
            return self.end_time is not None and at < self.end_time
        return True

    def period_at(self, at: datetime) -> PeriodView | None:
        """The period containing ``at``.

        The latest period, while still open, also takes events after its
        nominal end: between the end of a period and the billing clock
        closing it (which announces the next period) no later period is known
        yet, and rejecting that usage would lose it. Such events are billed
        with the period still open, once.
        """
        for period in reversed(self.periods):
            if period.contains(at):
                return period
        if self.periods:
            last = self.periods[-1]
            if not last.closed and at >= last.end:
                return last
        return None


@dataclass(frozen=True)
class Placement:
    """Where an accepted event counts."""

    subscription_id: str
    period: PeriodView


def _place(sub: SubscriptionView, at: datetime) -> Placement | Rejected:
    period = sub.period_at(at)
    if period is None:
        return Rejected(
            RejectionReason.NO_ACTIVE_SUBSCRIPTION,
            f"subscription {sub.subscription_id} has no billing period at {at.isoformat()}",
        )
    if period.closed:
        return Rejected(
            RejectionReason.PERIOD_CLOSED,
            f"the period of subscription {sub.subscription_id} starting"
            f" {period.start.isoformat()} is closed for invoicing",
        )
    if not sub.takes_usage_at(at):
        return Rejected(
            RejectionReason.NO_ACTIVE_SUBSCRIPTION,
            f"subscription {sub.subscription_id} is {sub.state.value} at {at.isoformat()}",
        )
    return Placement(sub.subscription_id, period)


def resolve_subscription(
    org_id: str,
    subscription_id: str,
    at: datetime,
    by_id: Mapping[str, SubscriptionView],
    by_org: Mapping[str, Sequence[SubscriptionView]],
) -> Placement | Rejected:
    """The subscription and open period an event of ``org_id`` at ``at`` counts in.

    Without a subscription id, the org's subscription that takes usage at
    ``at`` is chosen (the latest-starting one if, unusually, several do).
    """
    if subscription_id:
        sub = by_id.get(subscription_id)
        if sub is None or sub.org_id != org_id:
            return Rejected(
                RejectionReason.UNKNOWN_SUBSCRIPTION,
                f"org {org_id} has no subscription {subscription_id}",
            )
        return _place(sub, at)
    candidates = by_org.get(org_id, ())
    if not candidates:
        return Rejected(RejectionReason.NO_ACTIVE_SUBSCRIPTION, f"org {org_id} has no subscription")
    outcomes = [_place(sub, at) for sub in candidates]
    placed = [o for o in outcomes if isinstance(o, Placement)]
    if placed:
        return max(placed, key=lambda p: (p.period.start, p.subscription_id))
    rejections = [o for o in outcomes if isinstance(o, Rejected)]
    # A closed period says more than "nothing active": the usage came too late.
    for rejection in rejections:
        if rejection.reason is RejectionReason.PERIOD_CLOSED:
            return rejection
    return Rejected(
        RejectionReason.NO_ACTIVE_SUBSCRIPTION,
        f"org {org_id} has no subscription taking usage at {at.isoformat()}",
    )


# States in which a subscription takes usage at every instant of its periods.
_ALWAYS_TAKING = frozenset(
    {SubscriptionState.TRIALING, SubscriptionState.ACTIVE, SubscriptionState.PAST_DUE}
)


def _stable_window(
    sub: SubscriptionView, period: PeriodView
) -> tuple[datetime, datetime | None] | None:
    """The instants at which ``sub`` alone would place an event in ``period``, if simple.

    None unless the answer is plainly the same throughout: the subscription
    takes usage at every instant and no other period of it overlaps this one.
    The latest open period also takes what comes after its end (see
    ``SubscriptionView.period_at``), so its window has no end.
    """
    if sub.state not in _ALWAYS_TAKING or period.closed:
        return None
    for other in sub.periods:
        if other is not period and other.start < period.end and period.start < other.end:
            return None
    last = sub.periods[-1] if sub.periods else None
    return period.start, None if last is period else period.end


@dataclass
class PlacementCache:
    """``resolve_subscription`` for a whole batch, each answer reused while it must hold.

    A batch's events mostly belong to a few subscriptions; when one
    subscription is in play (the event names it, or it is its org's only one)
    and takes usage throughout, every instant of a period gets the same
    placement, so it is worked out once per (org, subscription id, period)
    instead of once per event.
    """

    by_id: Mapping[str, SubscriptionView]
    by_org: Mapping[str, Sequence[SubscriptionView]]
    _known: dict[tuple[str, str], tuple[Placement, datetime, datetime | None]] = field(
        default_factory=dict
    )

    def window(
        self, org_id: str, subscription_id: str
    ) -> tuple[Placement, datetime, datetime | None] | None:
        """The placement known for (org, subscription id) and the instants it holds for."""
        return self._known.get((org_id, subscription_id))

    def resolve(self, org_id: str, subscription_id: str, at: datetime) -> Placement | Rejected:
        key = (org_id, subscription_id)
        hit = self._known.get(key)
        if hit is not None:
            placement, start, end = hit
            if start <= at and (end is None or at < end):
                return placement
        outcome = resolve_subscription(org_id, subscription_id, at, self.by_id, self.by_org)
        if isinstance(outcome, Placement):
            if subscription_id:
                sub: SubscriptionView | None = self.by_id.get(subscription_id)
            else:
                candidates = self.by_org.get(org_id, ())
                sub = candidates[0] if len(candidates) == 1 else None
            window = _stable_window(sub, outcome.period) if sub is not None else None
            if window is not None:
                self._known[key] = (outcome, *window)
        return outcome
