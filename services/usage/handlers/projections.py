"""Keeping the local copies of metrics and subscriptions current from events.

Each function runs inside the consumer's unit of work (the inbox row commits
with it), so a redelivered event changes nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from services.kit.uow import UnitOfWork
from services.usage.repository import projections
from services.usage.repository.projections import MetricRow, SubscriptionRow, ThresholdRow

log = logging.getLogger(__name__)


async def apply_metric(uow: UnitOfWork, metric: MetricRow) -> None:
    await projections.upsert_metric(uow.session, metric)


async def apply_subscription(uow: UnitOfWork, subscription: SubscriptionRow) -> None:
    """The subscription as it is now, and its current period (opened if new)."""
    start, end = subscription.current_period_start, subscription.current_period_end
    await projections.upsert_subscription(
        uow.session,
        subscription,
        with_open_period=start is not None and end is not None and end > start,
    )


@dataclass(frozen=True)
class PeriodClosed:
    subscription_id: str
    org_id: str
    period_start: datetime
    period_end: datetime
    close_time: datetime
    next_period_start: datetime | None
    next_period_end: datetime | None


async def close_period(uow: UnitOfWork, closed: PeriodClosed) -> None:
    """Freeze the period's aggregates; later events for it are PERIOD_CLOSED.

    The next period, when there is one, opens and becomes the subscription's
    current period in the same transaction: the renewed event says the same
    later, and reads of "the current period" never point at a frozen one.
    """
    nxt = None
    if closed.next_period_start is not None and closed.next_period_end is not None:
        nxt = (closed.next_period_start, closed.next_period_end)
    frozen = await projections.close_period(
        uow.session,
        closed.subscription_id,
        closed.org_id,
        closed.period_start,
        closed.period_end,
        closed.close_time,
        nxt,
    )
    log.info(
        "usage period closed: subscription %s period %s, %d aggregates frozen",
        closed.subscription_id,
        closed.period_start.isoformat(),
        frozen,
    )


async def apply_package_version(
    uow: UnitOfWork, package_version_id: str, thresholds: list[ThresholdRow]
) -> None:
    """Remember the metered feature limits of a published version (alert thresholds)."""
    await projections.replace_thresholds(uow.session, package_version_id, thresholds)
