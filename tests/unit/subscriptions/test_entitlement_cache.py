"""The entitlement cache: answers from memory until a commit of this process
touches the org (or the TTL passes), and never stores a read that a commit
to its org overtook."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.subscriptions.repository import EntitlementRow
from services.subscriptions.repository.entitlement_cache import (
    BulkLoader,
    EntitlementCache,
    Key,
    Loader,
)
from services.subscriptions.repository.projections import EntitlementChanges


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


class Orgs:
    """Per-org totals, the way the entitlement statement would read them."""

    def __init__(self) -> None:
        self.used: dict[str, Decimal] = {}
        self.reads = 0
        self.bulk_reads = 0

    async def load(self, org_id: str, feature_key: str) -> EntitlementRow | None:
        self.reads += 1
        return EntitlementRow(f"sub-{org_id}", None, self.used.get(org_id, Decimal(0)))

    async def load_many(self, keys: Sequence[Key]) -> dict[Key, EntitlementRow | None]:
        self.bulk_reads += 1
        return {(org, f): EntitlementRow(f"sub-{org}", None, self._used(org)) for org, f in keys}

    def _used(self, org_id: str) -> Decimal:
        return self.used.get(org_id, Decimal(0))

    def commit(self, cache: EntitlementCache, org_id: str, used: int) -> None:
        self.used[org_id] = Decimal(used)
        cache.forget(EntitlementChanges(orgs={org_id}))

    def gated_load(self, gate: asyncio.Event) -> Loader:
        """A read that takes its snapshot now and answers once ``gate`` opens."""

        async def load(org_id: str, feature_key: str) -> EntitlementRow | None:
            row = await self.load(org_id, feature_key)
            await gate.wait()
            return row

        return load

    def gated_load_many(self, gate: asyncio.Event) -> BulkLoader:
        async def load_many(keys: Sequence[Key]) -> dict[Key, EntitlementRow | None]:
            rows = await self.load_many(keys)
            await gate.wait()
            return rows

        return load_many

    async def assert_current(
        self, cache: EntitlementCache, in_flight: list[tuple[asyncio.Task[Any], asyncio.Event]]
    ) -> None:
        """Let every read in flight finish, then every org answers what is stored."""
        for task, gate in in_flight:
            gate.set()
            await task
        for org in ("a", "b", "c"):
            row = await cache.get(org, "seats", self.load)
            assert row is not None and row.used == self.used.get(org, Decimal(0))


async def test_a_commit_forgets_only_the_orgs_it_touched() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()
    for org in ("a", "b"):
        await cache.get(org, "seats", table.load)
    table.commit(cache, "a", 4)
    a = await cache.get("a", "seats", table.load)
    b = await cache.get("b", "seats", table.load)
    assert a is not None and a.used == Decimal(4)
    assert b is not None and b.used == Decimal(0)
    assert table.reads == 3  # "b" was still in memory


async def test_a_change_of_limits_forgets_every_org() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()
    for org in ("a", "b"):
        await cache.get(org, "seats", table.load)
    cache.forget(EntitlementChanges(every_org=True))
    for org in ("a", "b"):
        await cache.get(org, "seats", table.load)
    assert table.reads == 4


async def test_a_read_is_kept_unless_a_commit_to_its_own_org_overtook_it() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()
    release = asyncio.Event()

    async def slow_load(org_id: str, feature_key: str) -> EntitlementRow | None:
        row = await table.load(org_id, feature_key)
        await release.wait()
        return row

    a = asyncio.create_task(cache.get("a", "seats", slow_load))
    b = asyncio.create_task(cache.get("b", "seats", slow_load))
    await asyncio.sleep(0)
    table.commit(cache, "a", 9)  # lands while both reads are in flight
    release.set()
    await asyncio.gather(a, b)
    reads = table.reads
    fresh = await cache.get("a", "seats", table.load)
    assert fresh is not None and fresh.used == Decimal(9)
    await cache.get("b", "seats", table.load)
    assert table.reads == reads + 1  # only "a" was read again


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_answers_still_asked_for_are_refreshed_together_before_they_expire() -> None:
    clock, table = Clock(), Orgs()
    # Kept while asked for within one TTL, so "idle" drops out within this test.
    cache = EntitlementCache(ttl_seconds=1, clock=clock, keep_seconds=1)
    for org in ("a", "b", "idle"):
        await cache.get(org, "seats", table.load, table.load_many)
    table.used = {"a": Decimal(2), "b": Decimal(3)}  # committed by another replica
    clock.now = 0.6  # past half their life
    for org in ("a", "b"):
        await cache.get(org, "seats", table.load, table.load_many)
    await asyncio.sleep(0.01)  # the refresh runs
    clock.now = 1.2  # past the first read's expiry
    a = await cache.get("a", "seats", table.load, table.load_many)
    b = await cache.get("b", "seats", table.load, table.load_many)
    assert table.reads == 3 and table.bulk_reads == 1  # one statement for all
    assert a is not None and a.used == Decimal(2)
    assert b is not None and b.used == Decimal(3)
    clock.now = 1.7  # "idle" was refreshed once, then never asked for
    await cache.get("idle", "seats", table.load, table.load_many)
    assert table.reads == 4


async def test_orgs_asked_in_turn_once_a_ttl_stay_in_memory() -> None:
    clock, table = Clock(), Orgs()
    cache = EntitlementCache(ttl_seconds=1, clock=clock)
    for step in range(12):  # a steady caller going round four orgs
        clock.now = step * 0.25
        await cache.get("abcd"[step % 4], "seats", table.load, table.load_many)
        await asyncio.sleep(0)  # a refresh it started runs
    assert table.reads == 4  # the first round only


async def test_orgs_asked_in_turn_less_than_once_a_ttl_stay_in_memory() -> None:
    clock, table = Clock(), Orgs()
    cache = EntitlementCache(ttl_seconds=1, clock=clock)
    for step in range(40):  # going round eight orgs, each asked every 2 TTLs
        clock.now = step * 0.25
        await cache.get("abcdefgh"[step % 8], "seats", table.load, table.load_many)
        await asyncio.sleep(0)  # a refresh it started runs
    assert table.reads == 8  # the first round only


async def test_answers_nobody_asks_for_any_more_drop_out() -> None:
    clock, table = Clock(), Orgs()
    cache = EntitlementCache(ttl_seconds=1, clock=clock, keep_seconds=3)
    await cache.get("gone", "seats", table.load, table.load_many)
    for step in range(1, 40):  # only "busy" is asked for after the start
        clock.now = step * 0.25
        await cache.get("busy", "seats", table.load, table.load_many)
        await asyncio.sleep(0)
    await cache.get("gone", "seats", table.load, table.load_many)
    assert table.reads == 3  # "gone" was read again, "busy" never was


async def test_a_refresh_keeps_nothing_of_an_org_a_commit_overtook() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()
    release = asyncio.Event()

    async def slow_many(keys: Sequence[Key]) -> dict[Key, EntitlementRow | None]:
        rows = await table.load_many(keys)
        await release.wait()
        return rows

    refreshing = asyncio.create_task(cache.refresh([("a", "seats"), ("b", "seats")], slow_many))
    await asyncio.sleep(0)
    table.commit(cache, "a", 6)
    release.set()
    await refreshing
    a = await cache.get("a", "seats", table.load)
    assert a is not None and a.used == Decimal(6)
    await cache.get("b", "seats", table.load)
    assert table.reads == 1  # "b" came from the refresh


# One step: ("commit", org, total), ("read", org) or ("start", org) / ("finish",)
# for a read that spans the steps between them, as a read in flight while
# commits land does.
_ORGS = st.sampled_from(["a", "b", "c"])
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), _ORGS, st.integers(0, 5)),
        st.tuples(st.just("read"), _ORGS),
        st.tuples(st.just("start"), _ORGS),
        st.tuples(st.just("finish")),
        st.tuples(st.just("everyone"), st.integers(0, 5)),
        st.tuples(st.just("refresh")),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS)
def test_answers_are_what_the_database_holds_after_every_commit(
    steps: list[tuple[object, ...]],
) -> None:
    async def run() -> None:
        cache, table = EntitlementCache(ttl_seconds=3600), Orgs()
        in_flight: list[tuple[asyncio.Task[Any], asyncio.Event]] = []
        task: asyncio.Task[Any]

        for step in steps:
            match step:
                case ("commit", str(org), int(total)):
                    table.commit(cache, org, total)
                case ("everyone", int(total)):
                    table.used = {org: Decimal(total) for org in table.used}
                    cache.forget(EntitlementChanges(every_org=True))
                case ("read", str(org)):
                    row = await cache.get(org, "seats", table.load)
                    assert row is not None
                    assert row.used == table.used.get(org, Decimal(0))
                case ("start", str(org)):
                    gate = asyncio.Event()
                    task = asyncio.create_task(cache.get(org, "seats", table.gated_load(gate)))
                    await asyncio.sleep(0)  # it has read its snapshot
                    in_flight.append((task, gate))
                case ("refresh",):
                    gate = asyncio.Event()
                    keys = [(org, "seats") for org in ("a", "b", "c")]
                    task = asyncio.create_task(cache.refresh(keys, table.gated_load_many(gate)))
                    await asyncio.sleep(0)
                    in_flight.append((task, gate))
                case ("finish",) if in_flight:
                    task, gate = in_flight.pop(0)
                    gate.set()
                    await task
        await table.assert_current(cache, in_flight)

    asyncio.run(run())


async def test_concurrent_misses_share_one_statement_and_get_their_own_answers() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()
    table.used = {org: Decimal(n) for n, org in enumerate("abcdefgh")}
    asks = [(org, "seats") for org in "abcdefgh"] + [("a", "seats"), ("nobody", "seats")]
    rows = await asyncio.gather(*(cache.get(o, f, table.load, table.load_many) for o, f in asks))
    assert [row.used if row else None for row in rows] == [
        table.used.get(org, Decimal(0)) for org, _ in asks
    ]
    assert (table.reads, table.bulk_reads) == (0, 1)
    again = await asyncio.gather(*(cache.get(o, f, table.load, table.load_many) for o, f in asks))
    assert again == rows and table.bulk_reads == 1  # all of them were kept


async def test_a_miss_asked_during_a_gathered_read_waits_for_the_next_one() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()
    sent, release = asyncio.Event(), asyncio.Event()

    async def slow_many(keys: Sequence[Key]) -> dict[Key, EntitlementRow | None]:
        rows = await table.load_many(keys)  # the snapshot of its start
        sent.set()
        await release.wait()
        return rows

    def ask(org: str) -> asyncio.Task[EntitlementRow | None]:
        return asyncio.create_task(cache.get(org, "seats", table.load, slow_many))

    first = [ask("a"), ask("b")]
    await sent.wait()
    table.commit(cache, "a", 7)  # lands while the first statement is in flight
    late = [ask("a"), ask("c")]  # asked after the commit
    release.set()
    old_a, old_b = await asyncio.gather(*first)
    new_a, c = await asyncio.gather(*late)
    assert old_a is not None and old_a.used == Decimal(0)  # its own snapshot
    assert new_a is not None and new_a.used == Decimal(7)  # not the statement before it
    assert old_b is not None and c is not None
    assert table.bulk_reads == 2
    kept = await cache.get("a", "seats", table.load, table.load_many)
    assert kept is not None and kept.used == Decimal(7)


async def test_a_failed_gathered_read_fails_each_caller_and_the_next_miss_reads_again() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()

    async def broken(keys: Sequence[Key]) -> dict[Key, EntitlementRow | None]:
        raise ConnectionError("database went away")

    asks = [cache.get(org, "seats", table.load, broken) for org in "ab"]
    results = await asyncio.gather(*asks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    row = await cache.get("a", "seats", table.load, table.load_many)
    assert row is not None and table.reads == 1


async def test_a_caller_giving_up_does_not_cancel_the_others() -> None:
    cache, table = EntitlementCache(ttl_seconds=60), Orgs()
    release = asyncio.Event()

    async def slow_many(keys: Sequence[Key]) -> dict[Key, EntitlementRow | None]:
        await release.wait()
        return await table.load_many(keys)

    impatient = asyncio.create_task(cache.get("a", "seats", table.load, slow_many))
    patient = asyncio.create_task(cache.get("a", "seats", table.load, slow_many))
    other = asyncio.create_task(cache.get("b", "seats", table.load, slow_many))
    await asyncio.sleep(0.01)
    impatient.cancel()
    release.set()
    a, b = await asyncio.gather(patient, other)
    assert a is not None and b is not None
    assert impatient.cancelled()
