"""The kit's promise, against real PostgreSQL and NATS: every event written with
its change is published, and applied exactly once, across relay crashes and
redeliveries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.msg import Msg
from tally.events.v1 import kit_events_pb2

from services.kit.bus import EventBus
from services.kit.db import Database
from services.kit.events import EventEnvelope
from services.kit.streams import dlq_stream, producer_stream, stream_name
from services.kit.uow import UnitOfWork
from tests.support.kit_probe import (
    PROBE_SCHEMA,
    Probe,
    Sink,
    probe_databases,
    probe_metadata,
    probe_table,
    reset_probe,
)

pytestmark = pytest.mark.integration

STREAM = stream_name("kit")


@pytest.fixture(scope="module")
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(nats_url, name="kit-tests")
    yield bus
    await bus.close()


@pytest.fixture(scope="module")
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    async with probe_databases(database_url) as both:
        yield both


@pytest.fixture
async def probe(databases: tuple[Database, Database], bus: EventBus) -> AsyncIterator[Probe]:
    # A fresh stream per test: JetStream's duplicate window must not remember
    # ids across tests, and message counts start at zero.
    with contextlib.suppress(Exception):
        await bus.js.delete_stream(STREAM)
    await bus.ensure_streams([producer_stream("kit"), dlq_stream()])
    probe = Probe(databases[0], bus)
    await reset_probe(probe)
    yield probe


@pytest.fixture
async def sink(databases: tuple[Database, Database], bus: EventBus) -> Sink:
    sink = Sink(databases[1], bus)
    await sink.reset()
    return sink


async def stream_messages(bus: EventBus, stream: str = STREAM) -> int:
    return int((await bus.js.stream_info(stream)).state.messages)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(*coros: Awaitable[None]) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def test_event_is_written_with_its_change_and_published_once(
    probe: Probe, bus: EventBus
) -> None:
    await probe.record("p1", "hello")
    assert await probe.pending() == 1
    assert await stream_messages(bus) == 0  # nothing leaves before the relay runs

    assert await probe.relay.publish_pending() == 1
    assert await probe.pending() == 0
    assert await stream_messages(bus) == 1
    assert await probe.relay.publish_pending() == 0  # marked: not sent again

    msg = await bus.js.get_last_msg(STREAM, "tally.kit.probe.recorded")
    envelope = EventEnvelope.from_message(msg.subject, msg.headers, msg.data)
    event = envelope.decode()
    assert isinstance(event, kit_events_pb2.KitProbeEvent)
    assert (event.probe_id, event.note) == ("p1", "hello")
    assert envelope.aggregate_id == "p1"


async def test_a_failed_use_case_leaves_neither_row_nor_event(probe: Probe) -> None:
    with pytest.raises(RuntimeError):
        await probe.record("p-fail", fail=True)
    assert await probe.pending() == 0
    async with probe.database.session() as session:
        from tests.support.kit_probe import probe_table

        rows = (await session.execute(probe_table.select())).all()
    assert rows == []


async def test_relay_killed_between_commit_and_publish_loses_nothing(
    probe: Probe, sink: Sink, bus: EventBus
) -> None:
    for i in range(5):
        await probe.record(f"p{i}", sequence=i)
    # A relay that dies before it publishes anything: the events stay pending.
    relay_task = asyncio.ensure_future(probe.relay.run())
    relay_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relay_task
    assert await probe.pending() == 5

    # Restarted, it sends every one of them and the sink applies each once.
    consumer = sink.consumer()
    async with running(probe.relay.run(), consumer.run()):
        await eventually(lambda: _applied_is(sink, {f"p{i}": 1 for i in range(5)}))
    assert await probe.pending() == 0
    assert await stream_messages(bus) == 5


async def test_relay_killed_after_publish_before_marking_sends_no_double(
    probe: Probe, sink: Sink, bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        await probe.record(f"q{i}", sequence=i)

    async def crash(*args: object) -> None:
        raise RuntimeError("killed between publish and mark")

    with monkeypatch.context() as patch:
        patch.setattr(probe.relay, "_mark_published", crash)
        with pytest.raises(RuntimeError):
            await probe.relay.publish_pending()
    assert await stream_messages(bus) == 3  # published...
    assert await probe.pending() == 3  # ...but not marked: the crash rolled the marks back

    # The restarted relay sends all three again; Nats-Msg-Id makes JetStream drop them.
    assert await probe.relay.publish_pending() == 3
    assert await probe.pending() == 0
    assert await stream_messages(bus) == 3

    consumer = sink.consumer()
    async with running(consumer.run()):
        await eventually(lambda: _applied_is(sink, {f"q{i}": 1 for i in range(3)}))


async def test_redelivery_after_a_lost_ack_is_applied_once(
    probe: Probe, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    await probe.record("r1")
    await probe.relay.publish_pending()

    # The handler's transaction commits, then the process "dies" before the ack.
    lost_acks: list[str] = []
    original_ack = Msg.ack

    async def lose_first_ack(self: Msg) -> None:
        if not lost_acks:
            lost_acks.append(self.subject)
            return
        await original_ack(self)

    monkeypatch.setattr(Msg, "ack", lose_first_ack)
    consumer = sink.consumer(durable="probe-counter-redelivery", ack_wait=1.0)
    async with running(consumer.run()):
        await eventually(lambda: _applied_is(sink, {"r1": 1}))
        # JetStream redelivers once ack_wait passes; the inbox turns it into an ack.
        info_ok = lambda: _no_pending(consumer)  # noqa: E731
        await eventually(info_ok, timeout=15)
    assert lost_acks == ["tally.kit.probe.recorded"]
    assert await sink.applied() == {"r1": 1}


async def test_replaying_an_event_applies_nothing_the_second_time(
    probe: Probe, sink: Sink, bus: EventBus
) -> None:
    await probe.record("s1")
    await probe.relay.publish_pending()
    msg = await bus.js.get_last_msg(STREAM, "tally.kit.probe.recorded")
    consumer = sink.consumer(durable="probe-counter-replay")
    assert await consumer.apply(msg.subject, dict(msg.headers or {}), msg.data) is True
    assert await consumer.apply(msg.subject, dict(msg.headers or {}), msg.data) is False
    assert await sink.applied() == {"s1": 1}


async def test_events_of_one_aggregate_keep_their_commit_order(probe: Probe, bus: EventBus) -> None:
    for i in range(20):
        await probe.record(f"agg/{i}", sequence=i)
    # Small batches force several relay rounds.
    probe.relay.batch_size = 3
    while await probe.relay.publish_pending():
        pass
    sub = await bus.js.pull_subscribe("tally.kit.probe.recorded", durable=None, stream=STREAM)
    msgs = await sub.fetch(20, timeout=5)
    sequences = [kit_events_pb2.KitProbeEvent.FromString(m.data).sequence for m in msgs]
    assert sequences == list(range(20))
    await sub.unsubscribe()


async def test_a_message_that_keeps_failing_is_parked_on_the_dead_letter_subject(
    probe: Probe, sink: Sink, bus: EventBus
) -> None:
    attempts: list[int] = []

    async def always_fails(
        uow: UnitOfWork, event: kit_events_pb2.KitProbeEvent, env: EventEnvelope
    ) -> None:
        attempts.append(event.sequence)
        raise ValueError("cannot apply this")

    with contextlib.suppress(Exception):
        await bus.js.purge_stream("TALLY_DLQ")
    await probe.record("poison", sequence=7)
    await probe.relay.publish_pending()
    consumer = sink.consumer(
        durable="probe-poison", handler=always_fails, max_deliver=3, backoff=(0.1,)
    )
    async with running(consumer.run()):
        await eventually(lambda: _dlq_has(bus, 1), timeout=15)
    assert attempts == [7, 7, 7]
    dead = await bus.js.get_last_msg("TALLY_DLQ", "tally.dlq.kit-sink.probe-poison")
    assert dead.headers is not None
    assert "ValueError: cannot apply this" in dead.headers["Tally-Dlq-Reason"]
    assert dead.headers["Tally-Dlq-Original-Subject"] == "tally.kit.probe.recorded"
    assert kit_events_pb2.KitProbeEvent.FromString(dead.data).probe_id == "poison"
    assert await sink.applied() == {}  # the failed attempts left no trace


async def _applied_is(sink: Sink, expected: dict[str, int]) -> bool:
    return await sink.applied() == expected


async def _no_pending(consumer: object) -> bool:
    from services.kit.consumer import EventConsumer

    assert isinstance(consumer, EventConsumer)
    info = await consumer.bus.js.consumer_info(consumer.sub.stream, consumer.consumer_name)
    return info.num_ack_pending == 0 and info.num_pending == 0 and info.delivered.consumer_seq >= 2


async def _dlq_has(bus: EventBus, count: int) -> bool:
    try:
        return await stream_messages(bus, "TALLY_DLQ") >= count
    except Exception:
        return False


async def test_a_retried_request_id_replays_the_first_answer_and_changes_nothing(
    probe: Probe,
) -> None:
    from tally.catalog.v1 import catalog_pb2

    from services.kit.errors import InvalidArgument
    from services.kit.idempotency import RequestLog, run_mutation

    requests = RequestLog(probe_metadata.tables[f"{PROBE_SCHEMA}.idempotent_request"])
    runs: list[str] = []

    async def work(uow: UnitOfWork) -> catalog_pb2.CreateMetricResponse:
        probe_id = f"m{len(runs)}"
        runs.append(probe_id)
        await uow.session.execute(probe_table.insert().values(probe_id=probe_id))
        uow.emit(kit_events_pb2.KitProbeEvent(probe_id=probe_id), aggregate_id=probe_id)
        response = catalog_pb2.CreateMetricResponse()
        response.metric.metric_id = probe_id
        return response

    request = catalog_pb2.CreateMetricRequest(request_id="req-1")
    request.metric.code = "api_calls"
    first = await run_mutation(
        probe.uow, requests, "CreateMetric", request, catalog_pb2.CreateMetricResponse, work
    )
    again = await run_mutation(
        probe.uow, requests, "CreateMetric", request, catalog_pb2.CreateMetricResponse, work
    )
    assert first == again
    assert runs == ["m0"]  # the retry applied nothing
    assert await probe.pending() == 1  # and emitted nothing

    other = catalog_pb2.CreateMetricRequest(request_id="req-1")
    other.metric.code = "storage"
    with pytest.raises(InvalidArgument) as caught:
        await run_mutation(
            probe.uow, requests, "CreateMetric", other, catalog_pb2.CreateMetricResponse, work
        )
    assert caught.value.reason == "REQUEST_ID_REUSED"

    no_id = catalog_pb2.CreateMetricRequest()
    await run_mutation(
        probe.uow, requests, "CreateMetric", no_id, catalog_pb2.CreateMetricResponse, work
    )
    await run_mutation(
        probe.uow, requests, "CreateMetric", no_id, catalog_pb2.CreateMetricResponse, work
    )
    assert runs == ["m0", "m1", "m2"]  # without a request id every call is new


async def test_the_consumer_continues_the_producers_trace(probe: Probe, sink: Sink) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from services.kit.telemetry import configure_tracing

    exporter = InMemorySpanExporter()
    if configure_tracing("kit-tests", exporter=exporter) is None:
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.add_span_processor(SimpleSpanProcessor(exporter))

    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("record-probe") as producer_span:
        await probe.record("traced")
    await probe.relay.publish_pending()
    consumer = sink.consumer(durable="probe-traced")
    async with running(consumer.run()):
        await eventually(lambda: _applied_is(sink, {"traced": 1}))

    trace_id = producer_span.get_span_context().trace_id
    consumed = [
        s for s in exporter.get_finished_spans() if s.name == "consume tally.kit.probe.recorded"
    ]
    assert consumed, "the consumer recorded no span"
    assert consumed[-1].context is not None
    assert consumed[-1].context.trace_id == trace_id
    assert consumed[-1].parent is not None
    assert consumed[-1].parent.span_id == producer_span.get_span_context().span_id
