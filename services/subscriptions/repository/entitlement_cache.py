"""Entitlement rows kept in memory between commits of this process.

CheckEntitlement is the hottest read of the suite (product code asks before
every gated action) while the rows behind it change only when this service
commits: a subscription changes, a plan is published, usage totals arrive.
So every commit of this process forgets the answers of the orgs its writes
touched (all of them when a plan's limits changed), which keeps one replica
exact while usage totals of other orgs keep arriving; another replica's
commits reach it within ``ttl`` seconds, a bound far below the usage totals'
own delay (``usage.aggregated`` is throttled to one event per few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from services.subscriptions.repository.projections import EntitlementChanges, EntitlementRow

if TYPE_CHECKING:
    from services.subscriptions.repository.store import SubscriptionsUnitOfWork

log = logging.getLogger(__name__)

Key = tuple[str, str]
Loader = Callable[[str, str], Awaitable[EntitlementRow | None]]
BulkLoader = Callable[[Sequence[Key]], Awaitable[Mapping[Key, EntitlementRow | None]]]

# Pairs re-read by one statement of a refresh.
REFRESH_BATCH = 1000


class _Entry:
    __slots__ = ("asked", "expiry", "row")

    def __init__(self, expiry: float, row: EntitlementRow | None, asked: bool) -> None:
        self.expiry = expiry
        self.row = row
        # Asked for since it was last read: worth keeping by a refresh.
        self.asked = asked


class EntitlementCache:
    """Answers per (org, feature) for ``ttl`` seconds from when they were read.

    Asks start refreshes (at most one per quarter TTL): one statement
    re-reads every answer asked for since it was read that is in the second
    half of its life, so the ones product code keeps asking for stay in
    memory instead of each costing a read when it expires (a TTL of a second
    would otherwise expire most of them between asks).
    """

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.clock = clock
        self.max_entries = max_entries
        # org -> feature -> entry: forgetting one org is one pop.
        self._rows: dict[str, dict[str, _Entry]] = {}
        self._size = 0
        # A read that started before a commit must not store what it read
        # once that commit has forgotten its org: every forget bumps a
        # version, kept per org only while a read of that org is in flight.
        self._cleared = 0
        self._versions: dict[str, int] = {}
        self._reading: dict[str, int] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at: float | None = None  # monotonic seconds

    def clear(self) -> None:
        self._cleared += 1
        self._rows.clear()
        self._size = 0

    def forget(self, changes: EntitlementChanges) -> None:
        """What a commit does: drop the answers its writes may have changed."""
        if changes.every_org:
            self.clear()
            return
        for org in changes.orgs:
            if org in self._reading:
                self._versions[org] = self._versions.get(org, 0) + 1
            dropped = self._rows.pop(org, None)
            if dropped is not None:
                self._size -= len(dropped)

    async def get(
        self, org_id: str, feature_key: str, load: Loader, load_many: BulkLoader | None = None
    ) -> EntitlementRow | None:
        if self.ttl <= 0:
            return await load(org_id, feature_key)
        now = self.clock()
        features = self._rows.get(org_id)
        if features is not None:
            hit = features.get(feature_key)
            if hit is not None and hit.expiry > now:
                hit.asked = True
                if load_many is not None:
                    self._start_refresh(now, load_many)
                return hit.row
        started = self._begin((org_id,))
        try:
            row = await load(org_id, feature_key)
            if self._unchanged(started, org_id):
                self._store(org_id, feature_key, _Entry(now + self.ttl, row, True))
        finally:
            self._end((org_id,))
        if load_many is not None:
            # Misses too: an org asked once per TTL (a steady caller going
            # round its orgs) would otherwise never be asked for in time.
            self._start_refresh(self.clock(), load_many)
        return row

    async def refresh(self, keys: Sequence[Key], load_many: BulkLoader) -> None:
        """Re-read ``keys`` together and keep what no commit overtook."""
        now = self.clock()
        orgs = {org for org, _ in keys}
        started = self._begin(orgs)
        try:
            rows = await load_many(keys)
            for key in keys:
                if key in rows and self._unchanged(started, key[0]):
                    self._store(key[0], key[1], _Entry(now + self.ttl, rows[key], False))
        finally:
            self._end(orgs)

    def _start_refresh(self, now: float, load_many: BulkLoader) -> None:
        # At most one refresh per quarter TTL, each taking what expires
        # within half a TTL: an answer asked for is re-read at least once
        # before it expires, and a busy cache costs a few statements a TTL.
        if self._refreshing is not None or (
            self._refreshed_at is not None and now - self._refreshed_at < self.ttl / 4
        ):
            return
        self._refreshed_at = now
        # Answers nobody asked for since they were read just expire.
        due = [
            (org, feature)
            for org, features in self._rows.items()
            for feature, entry in features.items()
            if entry.asked and entry.expiry - now < self.ttl / 2
        ]
        if not due:
            return
        for org, feature in due:
            self._rows[org][feature].asked = False
        self._refreshing = asyncio.create_task(self._refresh_all(due, load_many))

    async def _refresh_all(self, due: list[Key], load_many: BulkLoader) -> None:
        try:
            for first in range(0, len(due), REFRESH_BATCH):
                await self.refresh(due[first : first + REFRESH_BATCH], load_many)
        except Exception:
            # Nothing is lost: the answers expire and callers read their own.
            log.warning("entitlement cache: refresh failed", exc_info=True)
        finally:
            self._refreshing = None

    def _begin(self, orgs: Collection[str]) -> tuple[int, dict[str, int]]:
        for org in orgs:
            self._reading[org] = self._reading.get(org, 0) + 1
        return self._cleared, {org: self._versions.get(org, 0) for org in orgs}

    def _unchanged(self, started: tuple[int, dict[str, int]], org: str) -> bool:
        cleared, versions = started
        return cleared == self._cleared and versions[org] == self._versions.get(org, 0)

    def _end(self, orgs: Collection[str]) -> None:
        for org in orgs:
            left = self._reading.pop(org) - 1
            if left:
                self._reading[org] = left
            else:
                self._versions.pop(org, None)

    def _store(self, org_id: str, feature_key: str, entry: _Entry) -> None:
        if self._size >= self.max_entries:
            # Starting over bounds memory; nothing changed, so no version bump.
            self._rows.clear()
            self._size = 0
        features = self._rows.setdefault(org_id, {})
        if feature_key not in features:
            self._size += 1
        features[feature_key] = entry


class CachedEntitlements:
    """Entitlement rows through the cache, read in a unit of work of their own on a miss."""

    def __init__(
        self, make_uow: Callable[[], SubscriptionsUnitOfWork], cache: EntitlementCache
    ) -> None:
        self.make_uow = make_uow
        self.cache = cache

    async def read(self, org_id: str, feature_key: str) -> EntitlementRow | None:
        return await self.cache.get(org_id, feature_key, self._load, self._load_many)

    async def _load(self, org_id: str, feature_key: str) -> EntitlementRow | None:
        async with self.make_uow() as uow:
            return await uow.repo.entitlement(org_id, feature_key)

    async def _load_many(self, keys: Sequence[Key]) -> Mapping[Key, EntitlementRow | None]:
        async with self.make_uow() as uow:
            return await uow.repo.entitlements(keys)
