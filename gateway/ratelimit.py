"""Per-subject and per-organisation rate limits with the ``limits`` library."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gateway.problems import Problem
from services.kit.settings import GatewaySettings


class RateLimits:
    def __init__(self, settings: GatewaySettings) -> None:
        # Parsed at start-up so a typo in the setting fails the process, not a request.
        self.per_subject: RateLimitItem = parse(settings.rate_limit_per_subject)
        self.per_org: RateLimitItem = parse(settings.rate_limit_per_org)
        storage = storage_from_string(settings.rate_limit_storage_uri)
        if not isinstance(storage, Storage):
            raise ValueError("GATEWAY_RATE_LIMIT_STORAGE_URI must be an async+ storage URI")
        # A moving window: no burst of twice the limit across a window edge.
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, subject: str, org_id: str = "") -> None:
        """Count one request; 429 with Retry-After once either budget is spent."""
        checks = [(self.per_subject, "subject", subject)]
        if org_id:
            checks.append((self.per_org, "org", org_id))
        for item, kind, key in checks:
            if not await self._limiter.hit(item, kind, key):
                stats = await self._limiter.get_window_stats(item, kind, key)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                raise Problem(
                    429,
                    f"rate limit of {item} per {kind} exceeded; retry in {retry}s",
                    "RATE_LIMITED",
                    headers={"Retry-After": str(retry)},
                )
