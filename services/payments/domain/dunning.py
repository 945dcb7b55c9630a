"""The dunning schedule: when a failed collection is tried again, and when it stops.

``retry_days`` are waits between tries: with (1, 3, 5) the first failure is
retried a day later, the second three days after that, the third five days
after that, and the fourth failure is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class AfterFailure:
    next_retry_time: datetime | None
    retries_used: int
    final: bool


def after_failure(
    retries_used: int, retry_days: tuple[int, ...], failed_at: datetime
) -> AfterFailure:
    """What follows a failed attempt when ``retries_used`` retries were already scheduled."""
    if retries_used < len(retry_days):
        return AfterFailure(
            next_retry_time=failed_at + timedelta(days=retry_days[retries_used]),
            retries_used=retries_used + 1,
            final=False,
        )
    return AfterFailure(next_retry_time=None, retries_used=retries_used, final=True)
