"""The entitlement cache while other replicas' commits are heard as
notifications: answers stay until a notification forgets them (no refresh,
no TTL), a notification overtaking a read in flight keeps it out, and
hearing starting or stopping empties the cache."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.subscriptions.repository import EntitlementRow
from services.subscriptions.repository import entitlement_notices as notices
from services.subscriptions.repository.entitlement_cache import EntitlementCache
from services.subscriptions.repository.projections import EntitlementChanges
from tests.unit.subscriptions.test_entitlement_cache import Clock, Orgs


def notified(cache: EntitlementCache, changes: EntitlementChanges) -> None:
    """What the listener does with another replica's commit."""
    _origin, heard = notices.changes_from(notices.payload_for(changes, "elsewhere"))
    cache.forget(heard)


def listening_cache(clock: Clock, max_seconds: float = 300) -> EntitlementCache:
    cache = EntitlementCache(ttl_seconds=1, clock=clock, max_seconds=max_seconds)
    cache.set_listening(True)
    return cache


async def test_while_listening_answers_outlive_the_ttl_without_refreshes() -> None:
    clock, table = Clock(), Orgs()
    cache = listening_cache(clock)
    for org in ("a", "b"):
        await cache.get(org, "seats", table.load, table.load_many)
    for step in range(1, 200):  # 50 TTLs of a steady caller
        clock.now = step * 0.25
        await cache.get("ab"[step % 2], "seats", table.load, table.load_many)
        await asyncio.sleep(0)  # a refresh, were one started, would run
    assert (table.reads, table.bulk_reads) == (2, 0)


async def test_while_listening_max_seconds_still_bounds_an_answer() -> None:
    clock, table = Clock(), Orgs()
    cache = listening_cache(clock, max_seconds=30)
    await cache.get("a", "seats", table.load)
    table.used["a"] = Decimal(4)  # changed without a notification
    clock.now = 29
    stale = await cache.get("a", "seats", table.load)
    assert stale is not None and stale.used == Decimal(0)
    clock.now = 31
    fresh = await cache.get("a", "seats", table.load)
    assert fresh is not None and fresh.used == Decimal(4)


async def test_a_notification_forgets_only_the_orgs_it_names() -> None:
    clock, table = Clock(), Orgs()
    cache = listening_cache(clock)
    for org in ("a", "b"):
        await cache.get(org, "seats", table.load)
    table.used["a"] = Decimal(3)  # another replica's commit
    notified(cache, EntitlementChanges(orgs={"a"}))
    assert ("a", "seats") not in cache and ("b", "seats") in cache
    a = await cache.get("a", "seats", table.load)
    assert a is not None and a.used == Decimal(3)
    notified(cache, EntitlementChanges(every_org=True))
    assert ("b", "seats") not in cache


async def test_a_notification_overtaking_a_read_in_flight_keeps_it_out() -> None:
    clock, table = Clock(), Orgs()
    cache = listening_cache(clock)
    release, one_read, bulk_read = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_load(org_id: str, feature_key: str) -> EntitlementRow | None:
        row = await table.load(org_id, feature_key)  # the snapshot of its start
        one_read.set()
        await release.wait()
        return row

    async def slow_many(keys: Any) -> dict[Any, EntitlementRow | None]:
        rows = await table.load_many(keys)
        bulk_read.set()
        await release.wait()
        return rows

    single = asyncio.create_task(cache.get("a", "seats", slow_load))
    gathered = [asyncio.create_task(cache.get(o, "seats", table.load, slow_many)) for o in "bc"]
    await one_read.wait()
    await bulk_read.wait()
    table.used.update(a=Decimal(5), b=Decimal(6))
    notified(cache, EntitlementChanges(orgs={"a", "b"}))  # arrives mid-read
    release.set()
    await asyncio.gather(single, *gathered)
    assert ("a", "seats") not in cache and ("b", "seats") not in cache
    assert ("c", "seats") in cache  # untouched by the commit
    a = await cache.get("a", "seats", table.load)
    assert a is not None and a.used == Decimal(5)


async def test_losing_the_listener_empties_the_cache_and_falls_back_to_the_ttl() -> None:
    clock, table = Clock(), Orgs()
    cache = listening_cache(clock)
    await cache.get("a", "seats", table.load, table.load_many)
    cache.set_listening(False)
    assert ("a", "seats") not in cache
    await cache.get("a", "seats", table.load, table.load_many)
    table.used["a"] = Decimal(8)  # unheard now
    clock.now = 0.6
    await cache.get("a", "seats", table.load, table.load_many)
    await asyncio.sleep(0)  # the TTL mode's refresh runs again
    assert table.bulk_reads == 1
    clock.now = 1.2
    row = await cache.get("a", "seats", table.load, table.load_many)
    assert row is not None and row.used == Decimal(8)


async def test_a_read_spanning_a_reconnect_is_not_kept() -> None:
    clock, table = Clock(), Orgs()
    cache = EntitlementCache(ttl_seconds=1, clock=clock)
    release = asyncio.Event()

    async def slow_load(org_id: str, feature_key: str) -> EntitlementRow | None:
        row = await table.load(org_id, feature_key)
        await release.wait()
        return row

    pending = asyncio.create_task(cache.get("a", "seats", slow_load))
    await asyncio.sleep(0)
    table.used["a"] = Decimal(2)  # committed elsewhere before LISTEN took effect
    cache.set_listening(True)
    release.set()
    await pending
    assert ("a", "seats") not in cache


def test_payloads_name_their_origin_and_the_orgs_or_everyone() -> None:
    orgs = {"a,b", 'quote"d', "ünï", "pl:ain"}
    origin, changes = notices.changes_from(notices.payload_for(EntitlementChanges(orgs=orgs), "me"))
    assert (origin, changes.orgs, changes.every_org) == ("me", orgs, False)
    origin, changes = notices.changes_from(
        notices.payload_for(EntitlementChanges(every_org=True), "me")
    )
    assert (origin, changes.every_org) == ("me", True)
    many = EntitlementChanges(orgs={f"org-{n:06d}" for n in range(1000)})
    payload = notices.payload_for(many, "me")
    assert len(payload.encode()) < 8000 and notices.changes_from(payload)[1].every_org
    for garbage in ("not json", 'me:{"a": 1}', "me:[1]", '["no origin"]'):
        assert notices.changes_from(garbage)[1].every_org, garbage


def test_channels_are_per_schema_and_valid_identifiers() -> None:
    assert notices.channel_for("subscriptions") != notices.channel_for("subscriptions_b")
    long = notices.channel_for("s" * 63)
    assert len(long.encode()) <= 63 and long != notices.channel_for("s" * 62 + "t")


# ("commit", org, total) is heard at once, ("unheard", org, total) is a
# commit whose notification is lost with the connection, ("listen", bool)
# a (re)connect or a loss; reads may span any of them.
_ORGS = st.sampled_from(["a", "b", "c"])
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), _ORGS, st.integers(0, 5)),
        st.tuples(st.just("unheard"), _ORGS, st.integers(0, 5)),
        st.tuples(st.just("listen"), st.booleans()),
        st.tuples(st.just("read"), _ORGS),
        st.tuples(st.just("start"), _ORGS),
        st.tuples(st.just("finish")),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS)
def test_answers_are_what_the_database_holds_after_every_heard_commit(
    steps: list[tuple[object, ...]],
) -> None:
    async def run() -> None:
        clock, table = Clock(), Orgs()
        cache = EntitlementCache(ttl_seconds=3600, clock=clock)
        in_flight: list[tuple[asyncio.Task[Any], asyncio.Event]] = []
        # Commits made while nobody listened, not yet overtaken by a reconnect.
        missed = False

        for step in steps:
            match step:
                case ("commit", str(org), int(total)) if cache.listening:
                    table.used[org] = Decimal(total)
                    notified(cache, EntitlementChanges(orgs={org}))
                case ("unheard", str(org), int(total)) if not cache.listening:
                    table.used[org] = Decimal(total)  # the TTL mode's staleness
                    missed = True
                case ("listen", bool(up)):
                    cache.set_listening(up)
                    missed = missed and not up
                case ("read", str(org)):
                    row = await cache.get(org, "seats", table.load)
                    assert row is not None
                    if cache.listening or not missed:
                        assert row.used == table.used.get(org, Decimal(0))
                case ("start", str(org)):
                    gate = asyncio.Event()
                    task = asyncio.create_task(cache.get(org, "seats", table.gated_load(gate)))
                    await asyncio.sleep(0)
                    in_flight.append((task, gate))
                case ("finish",) if in_flight:
                    task, gate = in_flight.pop(0)
                    gate.set()
                    await task
        for task, gate in in_flight:  # finish before hearing starts again
            gate.set()
            await task
        cache.set_listening(True)
        await table.assert_current(cache, [])

    asyncio.run(run())
