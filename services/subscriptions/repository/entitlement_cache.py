"""Entitlement rows kept in memory between commits of this process.

CheckEntitlement is the hottest read of the suite (product code asks before
every gated action) while the rows behind it change only when this service
commits: a subscription changes, a plan is published, usage totals arrive.
So every commit of this process forgets the answers of the orgs its writes
touched (all of them when a plan's limits changed), which keeps one replica
exact while usage totals of other orgs keep arriving.

Another replica's commits arrive as PostgreSQL notifications
(``entitlement_notices``) that forget the same answers here. While they are
heard, an answer stays until forgotten (or ``max_seconds``, a safety bound);
while they are not (no connection yet, connection lost), nothing tells this
process what changed elsewhere, so answers last ``ttl`` seconds and the ones
still asked for are re-read before they expire, a bound far below the usage
totals' own delay (``usage.aggregated`` is throttled to one event per few
seconds). Switching either way empties the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
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
# Refreshes keep an answer asked for within this many TTLs. A caller going
# round more orgs than it asks for in a TTL (the bench: 2,000 orgs at 1,000
# calls/s) would otherwise miss on every call; an answer nobody asks for any
# more costs a few rows of a bulk statement until it drops out.
KEEP_TTLS = 10


class _Entry:
    __slots__ = ("asked_at", "expiry", "row")

    def __init__(self, expiry: float, row: EntitlementRow | None, asked_at: float) -> None:
        self.expiry = expiry
        self.row = row
        # When it was last asked for: refreshes keep what is still asked for.
        self.asked_at = asked_at


class EntitlementCache:
    """Answers per (org, feature) for ``ttl`` seconds from when they were read,
    or until forgotten (at most ``max_seconds``) while ``listening``.

    Without notifications, asks start refreshes (at most one per quarter
    TTL): one statement re-reads every answer in the second half of its life
    that was asked for within ``keep_seconds``, so the ones product code
    keeps asking for stay in memory instead of each costing a read when it
    expires (a TTL of a second would otherwise expire most of them between
    asks).

    Given a bulk loader, misses are gathered too: the misses asked while no
    read of misses is in flight share one statement, those asked while it
    runs share the next, so N concurrent misses (a cold start, a plan change
    that forgot everything) cost a couple of round trips, not N. A miss never
    joins a statement already sent: its answer reflects every commit that
    finished before it was asked.
    """

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        keep_seconds: float | None = None,
        max_seconds: float = 300.0,
    ) -> None:
        self.ttl = ttl_seconds
        # Never shorter than without notifications.
        self.max_seconds = max(max_seconds, ttl_seconds)
        self._listening = False
        # Names this cache in the notifications its own process's commits
        # send, which it skips: those commits forgot their answers already.
        self.origin = uuid.uuid4().hex
        self.keep = KEEP_TTLS * ttl_seconds if keep_seconds is None else keep_seconds
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
        # Misses waiting for the next gathered read, and the task doing them.
        self._misses: dict[Key, asyncio.Future[EntitlementRow | None]] = {}
        self._gathering: asyncio.Task[None] | None = None

    def clear(self) -> None:
        self._cleared += 1
        self._rows.clear()
        self._size = 0

    @property
    def listening(self) -> bool:
        return self._listening

    def set_listening(self, listening: bool) -> None:
        """Other replicas' commits are heard from now on (True) or no longer (False).

        Either way what is in memory may have missed a commit (sent while
        nobody listened, or kept beyond ``ttl``): start over. Reads in flight
        are not kept either, as after any clear.
        """
        self._listening = listening
        self.clear()

    def __contains__(self, key: Key) -> bool:
        entry = self._rows.get(key[0], {}).get(key[1])
        return entry is not None and entry.expiry > self.clock()

    def _lifetime(self) -> float:
        return self.max_seconds if self._listening else self.ttl

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
                hit.asked_at = now
                if load_many is not None and not self._listening:
                    self._start_refresh(now, load_many)
                return hit.row
        if load_many is not None:
            row = await self._gathered((org_id, feature_key), load, load_many)
            # Misses too: an org asked once per TTL (a steady caller going
            # round its orgs) would otherwise never be asked for in time.
            if not self._listening:
                self._start_refresh(self.clock(), load_many)
            return row
        started = self._begin((org_id,))
        try:
            row = await load(org_id, feature_key)
            if self._unchanged(started, org_id):
                self._store(org_id, feature_key, _Entry(now + self._lifetime(), row, now))
        finally:
            self._end((org_id,))
        return row

    async def _gathered(
        self, key: Key, load: Loader, load_many: BulkLoader
    ) -> EntitlementRow | None:
        waiting = self._misses.get(key)
        if waiting is None:
            waiting = self._misses[key] = asyncio.get_running_loop().create_future()
            # A caller that gave up (deadline) must not leave an unread error.
            waiting.add_done_callback(_retrieve)
            if self._gathering is None:
                self._gathering = asyncio.create_task(self._read_misses(load, load_many))
        # Shielded: one caller's cancellation must not cancel the others' answer.
        return await asyncio.shield(waiting)

    async def _read_misses(self, load: Loader, load_many: BulkLoader) -> None:
        # Callers pass the same loaders (they read the same rows), so the
        # first caller's serve the batches that follow.
        try:
            while self._misses:
                batch, self._misses = self._misses, {}
                await self._read_batch(batch, load, load_many)
        finally:
            for waiting in self._misses.values():
                waiting.cancel()  # only if this task itself was cancelled
            self._misses = {}
            self._gathering = None

    async def _read_batch(
        self,
        batch: Mapping[Key, asyncio.Future[EntitlementRow | None]],
        load: Loader,
        load_many: BulkLoader,
    ) -> None:
        now = self.clock()
        orgs = {org for org, _ in batch}
        started = self._begin(orgs)
        rows: Mapping[Key, EntitlementRow | None]
        try:
            if len(batch) == 1:
                ((org_id, feature_key),) = batch
                rows = {(org_id, feature_key): await load(org_id, feature_key)}
            else:
                rows = await load_many(list(batch))
            for key, waiting in batch.items():
                row = rows.get(key)
                if self._unchanged(started, key[0]):
                    self._store(key[0], key[1], _Entry(now + self._lifetime(), row, now))
                if not waiting.done():
                    waiting.set_result(row)
        except BaseException as failed:
            for waiting in batch.values():
                if waiting.done():
                    continue
                if isinstance(failed, asyncio.CancelledError):
                    waiting.cancel()
                else:
                    waiting.set_exception(failed)
            if isinstance(failed, Exception):
                return  # each caller raises it; the next batch still runs
            raise
        finally:
            self._end(orgs)

    async def refresh(self, keys: Sequence[Key], load_many: BulkLoader) -> None:
        """Re-read ``keys`` together and keep what no commit overtook."""
        now = self.clock()
        orgs = {org for org, _ in keys}
        started = self._begin(orgs)
        try:
            rows = await load_many(keys)
            for key in keys:
                if key in rows and self._unchanged(started, key[0]):
                    asked_at = self._asked_at(key, never=now - self.keep)
                    expiry = now + self._lifetime()
                    self._store(key[0], key[1], _Entry(expiry, rows[key], asked_at))
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
        # Answers nobody asked for lately just expire.
        due = [
            (org, feature)
            for org, features in self._rows.items()
            for feature, entry in features.items()
            if now - entry.asked_at < self.keep and entry.expiry - now < self.ttl / 2
        ]
        if not due:
            return
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

    def _asked_at(self, key: Key, never: float) -> float:
        entry = self._rows.get(key[0], {}).get(key[1])
        return never if entry is None else entry.asked_at

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


def _retrieve(future: asyncio.Future[EntitlementRow | None]) -> None:
    if not future.cancelled():
        future.exception()


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
