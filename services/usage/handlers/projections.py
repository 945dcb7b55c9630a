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
    await projections.upsert_subscription(uow.session, subscription)
    start, end = subscription.current_period_start, subscription.current_period_end
    if start is not None and end is not None and end > start:
        await projections.upsert_open_period(
            uow.session, subscription.subscription_id, subscription.org_id, start, end
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
    """Freeze the period's aggregates; later events for it are PERIOD_CLOSED."""
    frozen = await projections.close_period(
        uow.session,
        closed.subscription_id,
        closed.org_id,
        closed.period_start,
        closed.period_end,
        closed.close_time,
    )
    if closed.next_period_start is not None and closed.next_period_end is not None:
        await projections.upsert_open_period(
            uow.session,
            closed.subscription_id,
            closed.org_id,
            closed.next_period_start,
            closed.next_period_end,
        )
        await projections.advance_current_period(
            uow.session,
            closed.subscription_id,
            closed.period_start,
            closed.next_period_start,
            closed.next_period_end,
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
