"""Entitlement rows kept in memory between commits of this process.

CheckEntitlement is the hottest read of the suite (product code asks before
every gated action) while the rows behind it change only when this service
commits: a subscription changes, a plan is published, usage totals arrive.
So every commit of this process empties the cache, which makes it exact
within one replica; another replica's commits reach it within ``ttl``
seconds, a bound far below the usage totals' own delay (``usage.aggregated``
is throttled to one event per few seconds).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from services.subscriptions.repository.projections import EntitlementRow

if TYPE_CHECKING:
    from services.subscriptions.repository.store import SubscriptionsUnitOfWork

Loader = Callable[[str, str], Awaitable[EntitlementRow | None]]


class EntitlementCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._rows: dict[tuple[str, str], tuple[float, EntitlementRow | None]] = {}
        # Bumped by every clear: a read that started before a commit must not
        # store what it read after that commit emptied the cache.
        self._generation = 0

    def clear(self) -> None:
        self._generation += 1
        self._rows.clear()

    async def get(self, org_id: str, feature_key: str, load: Loader) -> EntitlementRow | None:
        if self.ttl <= 0:
            return await load(org_id, feature_key)
        key = (org_id, feature_key)
        now = time.monotonic()
        hit = self._rows.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        row = await load(org_id, feature_key)
        if generation == self._generation:
            if len(self._rows) >= self.max_entries:
                self._rows.clear()
            self._rows[key] = (now + self.ttl, row)
        return row


class CachedEntitlements:
    """Entitlement rows through the cache, read in a unit of work of their own on a miss."""

    def __init__(
        self, make_uow: Callable[[], SubscriptionsUnitOfWork], cache: EntitlementCache
    ) -> None:
        self.make_uow = make_uow
        self.cache = cache

    async def read(self, org_id: str, feature_key: str) -> EntitlementRow | None:
        return await self.cache.get(org_id, feature_key, self._load)

    async def _load(self, org_id: str, feature_key: str) -> EntitlementRow | None:
        async with self.make_uow() as uow:
            return await uow.repo.entitlement(org_id, feature_key)
