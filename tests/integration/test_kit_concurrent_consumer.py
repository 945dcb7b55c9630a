"""A consumer that applies a fetched batch concurrently (``concurrency`` > 1)
or several messages per transaction (``messages_per_transaction`` > 1), against
real PostgreSQL and NATS: each aggregate's events still apply in order, at
most ``concurrency`` at once, each exactly once, across lost acks, failed
attempts and poison messages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from nats.aio.msg import Msg
from sqlalchemy import text
from tally.events.v1 import kit_events_pb2

from services.kit.bus import EventBus
from services.kit.consumer import EventConsumer, Subscription
from services.kit.db import Database
from services.kit.events import EventEnvelope
from services.kit.streams import dlq_stream, dlq_subject, producer_stream, stream_name
from services.kit.uow import UnitOfWork
from tests.support.kit_probe import (
    Probe,
    Sink,
    count_applied,
    probe_databases,
    reset_probe,
)

pytestmark = pytest.mark.integration

STREAM = stream_name("kit")
AGGREGATES = ("a", "b", "c", "d", "e")
PER_AGGREGATE = 8


@pytest.fixture(scope="module")
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(nats_url, name="kit-concurrency-tests")
    yield bus
    await bus.close()


@pytest.fixture(scope="module")
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    async with probe_databases(database_url) as both:
        yield both


async def published(
    databases: tuple[Database, Database], bus: EventBus, keys: dict[str, str] | None = None
) -> Sink:
    """A fresh stream holding AGGREGATES x PER_AGGREGATE published events,
    interleaved across aggregates (``keys``: an aggregate's ordering key), and
    an empty sink."""
    with contextlib.suppress(Exception):
        await bus.js.delete_stream(STREAM)
    await bus.ensure_streams([producer_stream("kit"), dlq_stream()])
    probe = Probe(databases[0], bus)
    await reset_probe(probe)
    for i in range(PER_AGGREGATE):
        for agg in AGGREGATES:
            await probe.record(f"{agg}/{i}", sequence=i, ordering_key=(keys or {}).get(agg, ""))
    while await probe.relay.publish_pending():
        pass
    sink = Sink(databases[1], bus)
    await sink.reset()
    return sink


@pytest.fixture
async def sink(databases: tuple[Database, Database], bus: EventBus) -> Sink:
    return await published(databases, bus)


ALL_ONCE = {f"{agg}/{i}": 1 for agg in AGGREGATES for i in range(PER_AGGREGATE)}


class Recorder:
    """A handler that counts like ``count_applied`` and notes order and overlap."""

    def __init__(self, fail_once: set[str] | None = None) -> None:
        self.order: dict[str, list[int]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_once = set(fail_once or ())
        self.always_fail: set[str] = set()
        self.transactions: set[int] = set()
        self.per_transaction: dict[int, int] = {}
        self.applied: list[str] = []  # probe ids, in the order their handlers ran

    async def __call__(
        self, uow: UnitOfWork, event: kit_events_pb2.KitProbeEvent, envelope: EventEnvelope
    ) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # A random pause lets the lanes overtake one another.
            await asyncio.sleep(random.uniform(0, 0.01))
            if event.probe_id in self.fail_once:
                self.fail_once.discard(event.probe_id)
                raise RuntimeError(f"first attempt at {event.probe_id} fails")
            if event.probe_id in self.always_fail:
                raise RuntimeError(f"{event.probe_id} is poison")
            await count_applied(uow, event, envelope)
            txid = int(await uow.session.scalar(text("SELECT txid_current()")))
            self.transactions.add(txid)
            self.per_transaction[txid] = self.per_transaction.get(txid, 0) + 1
            self.order.setdefault(envelope.aggregate_id, []).append(event.sequence)
            self.applied.append(event.probe_id)
        finally:
            self.in_flight -= 1


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(consumer: EventConsumer[UnitOfWork]) -> AsyncIterator[None]:
    task = asyncio.ensure_future(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def all_applied_once(sink: Sink) -> bool:
    return await sink.applied() == ALL_ONCE


async def drained(consumer: EventConsumer[UnitOfWork]) -> bool:
    info = await consumer.bus.js.consumer_info(consumer.sub.stream, consumer.consumer_name)
    return info.num_ack_pending == 0 and info.num_pending == 0


def in_order(recorder: Recorder) -> dict[str, list[int]]:
    return {agg: list(range(PER_AGGREGATE)) for agg in recorder.order}


async def test_each_aggregate_applies_in_order_with_bounded_overlap(sink: Sink) -> None:
    recorder = Recorder()
    consumer = sink.consumer(durable="probe-concurrent", handler=recorder, concurrency=3)
    async with running(consumer):
        await eventually(lambda: all_applied_once(sink))
        await eventually(lambda: drained(consumer))
    assert set(recorder.order) == set(AGGREGATES)
    assert recorder.order == in_order(recorder)
    assert 1 < recorder.max_in_flight <= 3


async def test_concurrency_one_applies_one_message_at_a_time(sink: Sink) -> None:
    recorder = Recorder()
    consumer = sink.consumer(durable="probe-sequential", handler=recorder)
    async with running(consumer):
        await eventually(lambda: all_applied_once(sink))
    assert recorder.max_in_flight == 1
    assert recorder.order == in_order(recorder)


async def test_lost_acks_and_failed_attempts_apply_nothing_twice(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Committed but never acknowledged: JetStream redelivers after ack_wait and
    # the inbox must turn the second delivery into a bare ack.
    lose_ack_of = {"a/1", "c/5"}
    original_ack = Msg.ack

    async def lossy_ack(self: Msg) -> None:
        probe_id = kit_events_pb2.KitProbeEvent.FromString(self.data).probe_id
        if probe_id in lose_ack_of:
            lose_ack_of.discard(probe_id)
            return
        await original_ack(self)

    monkeypatch.setattr(Msg, "ack", lossy_ack)
    recorder = Recorder(fail_once={"b/2", "d/0"})
    consumer = sink.consumer(
        durable="probe-concurrent-redelivery",
        handler=recorder,
        concurrency=4,
        ack_wait=1.0,
        backoff=(0.1,),
    )
    async with running(consumer):
        await eventually(lambda: all_applied_once(sink))
        await eventually(lambda: drained(consumer))
    assert not lose_ack_of and not recorder.fail_once  # both faults happened
    assert await sink.applied() == ALL_ONCE


async def test_groups_apply_each_once_in_order_in_fewer_transactions(sink: Sink) -> None:
    recorder = Recorder()
    consumer = sink.consumer(
        durable="probe-grouped", handler=recorder, concurrency=2, messages_per_transaction=16
    )
    async with running(consumer):
        await eventually(lambda: all_applied_once(sink))
        await eventually(lambda: drained(consumer))
    assert recorder.order == in_order(recorder)
    assert set(recorder.order) == set(AGGREGATES)
    # Whole aggregates (8 messages each) are gathered up to 16 per transaction.
    assert len(recorder.transactions) < len(ALL_ONCE) // 2


async def test_an_ordering_key_shared_by_aggregates_is_one_lane(
    databases: tuple[Database, Database], bus: EventBus
) -> None:
    # a and b share one key and c and d another (two orgs, say); e has none.
    keys = {"a": "org-1", "b": "org-1", "c": "org-2", "d": "org-2"}
    sink = await published(databases, bus, keys)
    recorder = Recorder()
    consumer = sink.consumer(
        durable="probe-keyed", handler=recorder, concurrency=3, messages_per_transaction=5
    )
    async with running(consumer):
        await eventually(lambda: all_applied_once(sink))
        await eventually(lambda: drained(consumer))
    published_order = [f"{agg}/{i}" for i in range(PER_AGGREGATE) for agg in AGGREGATES]

    def lane(probe_id: str) -> str:
        agg = probe_id.split("/")[0]
        return keys.get(agg, agg)

    for key in ("org-1", "org-2", "e"):
        # One key's messages ran in publish order, across its aggregates...
        mine = [p for p in recorder.applied if lane(p) == key]
        assert mine == [p for p in published_order if lane(p) == key]
    # ...and a lane of 16 messages was cut into transactions of at most 5.
    assert max(recorder.per_transaction.values()) <= 5
    assert 1 < recorder.max_in_flight <= 3


async def test_a_poison_message_is_parked_alone_and_its_group_applied_once(
    sink: Sink, bus: EventBus
) -> None:
    recorder = Recorder(fail_once={"a/3", "c/0"})
    recorder.always_fail = {"b/4"}
    consumer = sink.consumer(
        durable="probe-grouped-poison",
        handler=recorder,
        concurrency=2,
        messages_per_transaction=40,
        max_deliver=2,
        backoff=(0.1,),
    )
    parked: list[str] = []

    async def note_parked(msg: Msg) -> None:
        parked.append(kit_events_pb2.KitProbeEvent.FromString(msg.data).probe_id)

    dead = await bus.js.subscribe(
        dlq_subject("kit-sink", "probe-grouped-poison"), cb=note_parked, ordered_consumer=True
    )
    try:
        async with running(consumer):
            expected = {k: 1 for k in ALL_ONCE if k != "b/4"}
            await eventually(lambda: _applied_is(sink, expected))
            await eventually(lambda: drained(consumer))
            await eventually(lambda: _is_true(parked == ["b/4"]))
    finally:
        await dead.unsubscribe()
    # Every group that held b/4 rolled back whole and was applied one by one,
    # so nothing of it is half-written and nothing applied twice.
    assert await sink.applied() == expected
    assert not recorder.fail_once


async def test_one_event_twice_in_a_group_applies_once(sink: Sink, bus: EventBus) -> None:
    consumer = sink.consumer(durable="probe-grouped-twice", messages_per_transaction=10)
    first = await bus.js.get_msg(STREAM, 1)
    second = await bus.js.get_msg(STREAM, 2)
    msgs = [
        Msg(bus.nc, subject=m.subject, data=m.data or b"", headers=m.headers)
        for m in (first, second, first)
    ]
    await consumer.apply_group(msgs)
    await consumer.apply_group(msgs)  # a redelivery of the whole group
    assert await sink.applied() == {"a/0": 1, "b/0": 1}


class GroupHook:
    """A ``prepare_group`` that notes what it saw, and can fail its first call."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.calls: list[tuple[UnitOfWork, list[str]]] = []
        self.fail_first = fail_first

    async def __call__(self, uow: UnitOfWork, events: Sequence[tuple[Any, EventEnvelope]]) -> None:
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("the first prepare fails")
        self.calls.append((uow, [e.probe_id for e, _ in events]))


def with_hook(consumer: EventConsumer[UnitOfWork], hook: GroupHook) -> EventConsumer[UnitOfWork]:
    consumer.sub = dataclasses.replace(consumer.sub, prepare_group=hook)
    return consumer


async def test_prepare_group_sees_each_groups_fresh_events_once(sink: Sink, bus: EventBus) -> None:
    hook = GroupHook()
    seen_in: list[UnitOfWork] = []

    async def handler(
        uow: UnitOfWork, event: kit_events_pb2.KitProbeEvent, envelope: EventEnvelope
    ) -> None:
        seen_in.append(uow)
        await count_applied(uow, event, envelope)

    consumer = with_hook(
        sink.consumer(durable="probe-prepare", handler=handler, messages_per_transaction=10),
        hook,
    )
    stored = [await bus.js.get_msg(STREAM, seq) for seq in (1, 2, 3)]
    a0, b0, c0 = (
        Msg(bus.nc, subject=m.subject, data=m.data or b"", headers=m.headers) for m in stored
    )
    await consumer.apply_group([a0, b0, a0])
    await consumer.apply_group([a0, b0])  # a redelivery: nothing fresh, no call
    await consumer.apply_group([b0, c0])
    assert [ids for _, ids in hook.calls] == [["a/0", "b/0"], ["c/0"]]
    # Called inside the unit of work the group's handlers then run in.
    assert seen_in == [hook.calls[0][0], hook.calls[0][0], hook.calls[1][0]]
    # The one by one path runs the handlers without it.
    await consumer.apply(stored[0].subject, dict(stored[0].headers or {}), stored[0].data or b"")
    assert len(hook.calls) == 2
    assert await sink.applied() == {"a/0": 1, "b/0": 1, "c/0": 1}


async def test_a_group_whose_prepare_fails_is_applied_one_by_one(sink: Sink) -> None:
    hook = GroupHook(fail_first=True)
    consumer = with_hook(
        sink.consumer(durable="probe-prepare-fails", messages_per_transaction=10), hook
    )
    async with running(consumer):
        await eventually(lambda: all_applied_once(sink))
        await eventually(lambda: drained(consumer))
    assert not hook.fail_first
    assert await sink.applied() == ALL_ONCE


async def _applied_is(sink: Sink, expected: dict[str, int]) -> bool:
    return await sink.applied() == expected


async def _is_true(value: bool) -> bool:
    return value


def test_messages_per_transaction_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="messages_per_transaction"):
        Subscription[UnitOfWork](
            durable="probe-bad",
            handlers={kit_events_pb2.KitProbeEvent: count_applied},
            messages_per_transaction=0,
        )


def test_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Subscription[UnitOfWork](
            durable="probe-bad",
            handlers={kit_events_pb2.KitProbeEvent: count_applied},
            concurrency=0,
        )
