"""The entitlement cache: answers from memory until this process commits or
the TTL passes, and never stores a read that a commit overtook."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from services.subscriptions.repository import EntitlementRow
from services.subscriptions.repository.entitlement_cache import EntitlementCache


class Table:
    """What the database would answer, and how often it was asked."""

    def __init__(self) -> None:
        self.used = Decimal(0)
        self.reads = 0

    async def load(self, org_id: str, feature_key: str) -> EntitlementRow | None:
        self.reads += 1
        return EntitlementRow(f"sub-{org_id}", None, self.used)


async def test_a_second_ask_is_answered_from_memory() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Table()
    first = await cache.get("org", "seats", table.load)
    second = await cache.get("org", "seats", table.load)
    assert first == second
    assert table.reads == 1
    await cache.get("org", "api_calls", table.load)
    await cache.get("other", "seats", table.load)
    assert table.reads == 3


async def test_a_commit_of_this_process_is_seen_at_once() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Table()
    await cache.get("org", "seats", table.load)
    table.used = Decimal(7)
    cache.clear()  # what every SubscriptionsUnitOfWork commit does
    row = await cache.get("org", "seats", table.load)
    assert row is not None and row.used == Decimal(7)


async def test_the_ttl_bounds_what_another_replica_changed() -> None:
    cache, table = EntitlementCache(ttl_seconds=0.05), Table()
    await cache.get("org", "seats", table.load)
    table.used = Decimal(3)  # committed elsewhere: no clear here
    stale = await cache.get("org", "seats", table.load)
    assert stale is not None and stale.used == Decimal(0)
    await asyncio.sleep(0.06)
    fresh = await cache.get("org", "seats", table.load)
    assert fresh is not None and fresh.used == Decimal(3)


async def test_a_read_overtaken_by_a_commit_is_not_kept() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Table()
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow_load(org_id: str, feature_key: str) -> EntitlementRow | None:
        row = await table.load(org_id, feature_key)  # reads the old total
        reading.set()
        await release.wait()
        return row

    pending = asyncio.create_task(cache.get("org", "seats", slow_load))
    await reading.wait()
    table.used = Decimal(5)
    cache.clear()  # a commit lands while the read is in flight
    release.set()
    old = await pending
    assert old is not None and old.used == Decimal(0)  # that caller saw its own read
    row = await cache.get("org", "seats", table.load)
    assert row is not None and row.used == Decimal(5)  # but it was not cached


async def test_zero_ttl_reads_every_time() -> None:
    cache, table = EntitlementCache(ttl_seconds=0), Table()
    for _ in range(3):
        await cache.get("org", "seats", table.load)
    assert table.reads == 3


async def test_a_full_cache_starts_over_instead_of_growing() -> None:
    cache, table = EntitlementCache(ttl_seconds=60, max_entries=2), Table()
    for org in ("a", "b", "c"):
        await cache.get(org, "seats", table.load)
    await cache.get("c", "seats", table.load)
    assert table.reads == 3  # "c" was kept after the reset
    await cache.get("a", "seats", table.load)
    assert table.reads == 4  # "a" was dropped by it
