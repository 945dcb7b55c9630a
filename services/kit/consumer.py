"""Idempotent JetStream consumers.

A durable pull consumer with explicit acks feeds handlers. The id of each
applied event goes into the inbox table in the handler's own transaction, so a
redelivery (a crash before the ack, a replay, a JetStream retry) finds the id
and is acknowledged without applying the effect twice. A message that keeps
failing is retried with backoff, then parked on the dead-letter subject.

A subscription may opt in to applying a fetched batch concurrently
(``concurrency`` > 1): messages are grouped by their aggregate id, each
aggregate's messages are applied in fetch order by one worker, and at most
``concurrency`` workers run at once. Only messages of different aggregates may
overtake one another.

It may also opt in to applying several messages in one transaction
(``messages_per_transaction`` > 1): a worker gathers whole aggregates' messages
up to that many and applies them, with one inbox row each, in one unit of
work, then acks them all. The guarantees above hold per message because the
effects, the inbox rows and the acks of a group stand or fall together. A group
that fails rolls back entirely and its messages are applied again one by one,
each in its own transaction, so one poison message is retried and parked
alone and never holds back the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import nats.errors
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from sqlalchemy import Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.bus import EventBus
from services.kit.events import (
    HEADER_AGGREGATE_ID,
    HEADER_ORDERING_KEY,
    EventEnvelope,
    subject_of,
)
from services.kit.streams import dlq_subject, producer_of, stream_name
from services.kit.tasks import raise_if_cancelling
from services.kit.uow import UnitOfWork

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tally.kit.consumer")

U = TypeVar("U", bound=UnitOfWork)
# A handler applies one event inside the unit of work the consumer opened; it
# must not commit: the consumer commits the effect and the inbox row together.
Handler = Callable[[U, Any, EventEnvelope], Awaitable[None]]
# Sees a group's fresh events, in order, before their handlers run.
GroupHook = Callable[[U, Sequence[tuple[Any, EventEnvelope]]], Awaitable[None]]

HEADER_DLQ_REASON = "Tally-Dlq-Reason"
HEADER_DLQ_SUBJECT = "Tally-Dlq-Original-Subject"
HEADER_DLQ_DELIVERIES = "Tally-Dlq-Deliveries"


def ordering_key(msg: Msg) -> str:
    """The lane of a message (``HEADER_ORDERING_KEY``, else its aggregate id).
    Messages with neither share one lane: no known independence."""
    headers: dict[str, str] = msg.headers or {}
    return headers.get(HEADER_ORDERING_KEY) or headers.get(HEADER_AGGREGATE_ID, "")


class Inbox:
    def __init__(self, table: Table) -> None:
        self.table = table
        # One statement for any group size, built once: a multi-row VALUES
        # insert was compiled again on every call (about 3% of a consumer
        # service's CPU). The name resolves through the service's search_path.
        self._claim_many = text(
            f"INSERT INTO {table.name} (consumer, event_id, subject)"
            " SELECT CAST(:consumer AS text), e.event_id, e.subject"
            " FROM unnest(CAST(:event_ids AS text[]), CAST(:subjects AS text[]))"
            " AS e(event_id, subject)"
            " ON CONFLICT DO NOTHING RETURNING event_id"
        )

    async def claim(self, session: AsyncSession, consumer: str, envelope: EventEnvelope) -> bool:
        """True the first time this consumer sees the event, False on a repeat."""
        stmt = (
            pg_insert(self.table)
            .values(consumer=consumer, event_id=envelope.event_id, subject=envelope.subject)
            .on_conflict_do_nothing()
            .returning(self.table.c.event_id)
        )
        return (await session.execute(stmt)).first() is not None

    async def claim_many(
        self, session: AsyncSession, consumer: str, envelopes: Sequence[EventEnvelope]
    ) -> set[str]:
        """Ids of the events this consumer sees for the first time, in one statement."""
        # The same event twice in a group is claimed once.
        subjects = {e.event_id: e.subject for e in envelopes}
        if not subjects:
            return set()
        result = await session.execute(
            self._claim_many,
            {
                "consumer": consumer,
                "event_ids": list(subjects),
                "subjects": list(subjects.values()),
            },
        )
        return set(result.scalars())


@dataclass
class Subscription(Generic[U]):
    """Which events a durable consumer applies, with what, and how it retries."""

    durable: str
    handlers: Mapping[type[Message], Handler[U]]
    max_deliver: int = 5
    backoff_seconds: Sequence[float] = (1.0, 5.0, 30.0, 120.0)
    batch_size: int = 100
    ack_wait_seconds: float = 30.0
    # Messages of different aggregates applied at once; 1 applies a batch in
    # order. Each one in flight holds a database connection: keep it below the
    # pool size (``db_pool_size``) and only opt in where the handlers are safe
    # for different aggregates at the same time.
    concurrency: int = 1
    # Messages applied in one transaction; 1 gives each its own. More saves a
    # transaction, an inbox statement and a connection checkout per message,
    # at the price of holding a group's row locks until the group commits.
    # Only for handlers whose effects all live in the unit of work.
    messages_per_transaction: int = 1
    # Called once per group of ``messages_per_transaction``, inside its unit of
    # work and before any handler, with the group's events not applied before,
    # so they can read what they all need at once. Never called on the one by
    # one path: the handlers must work without it.
    prepare_group: GroupHook[U] | None = None
    by_subject: dict[str, tuple[type[Message], Handler[U]]] = field(init=False)
    batched: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"{self.durable}: concurrency must be at least 1")
        if self.messages_per_transaction < 1:
            raise ValueError(f"{self.durable}: messages_per_transaction must be at least 1")
        self.batched = self.concurrency > 1 or self.messages_per_transaction > 1
        self.by_subject = {subject_of(cls): (cls, h) for cls, h in self.handlers.items()}
        producers = {producer_of(s) for s in self.by_subject}
        if len(producers) != 1:
            # One stream per producer: a durable consumer lives on exactly one.
            raise ValueError(f"{self.durable}: handlers span producers {sorted(producers)}")
        self.stream = stream_name(producers.pop())


class EventConsumer(Generic[U]):
    def __init__(
        self,
        service: str,
        bus: EventBus,
        uow_factory: Callable[[], U],
        inbox: Inbox,
        subscription: Subscription[U],
        *,
        fetch_timeout: float = 1.0,
    ) -> None:
        self.service = service
        self.bus = bus
        self.uow_factory = uow_factory
        self.inbox = inbox
        self.sub = subscription
        self.fetch_timeout = fetch_timeout
        self._psub: Any = None

    @property
    def consumer_name(self) -> str:
        return f"{self.service}-{self.sub.durable}"

    async def provision(self) -> None:
        """Create or update the durable consumer; idempotent across replicas."""
        config = ConsumerConfig(
            durable_name=self.consumer_name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=sorted(self.sub.by_subject),
            # The kit parks poison messages itself; this is a backstop.
            max_deliver=self.sub.max_deliver + 1,
            ack_wait=self.sub.ack_wait_seconds,
            max_ack_pending=max(1000, self.sub.batch_size * 4),
        )
        js = self.bus.js
        # The server treats a create of an existing durable as an update of
        # its editable fields, so every replica may run this at every start.
        await js.add_consumer(self.sub.stream, config)
        self._psub = await js.pull_subscribe_bind(
            durable=self.consumer_name, stream=self.sub.stream
        )

    async def run(self) -> None:
        if self._psub is None:
            await self.provision()
        try:
            await self._fetch_and_handle()
        finally:
            await self.close()

    async def close(self) -> None:
        """Drop the pull subscription so the connection can drain quickly."""
        psub, self._psub = self._psub, None
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _fetch_and_handle(self) -> None:
        failures = 0
        while True:
            try:
                msgs = await self._psub.fetch(self.sub.batch_size, timeout=self.fetch_timeout)
            except (nats.errors.TimeoutError, TimeoutError):
                raise_if_cancelling()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                failures += 1
                log.warning("%s: fetch failed (%s)", self.consumer_name, exc)
                await asyncio.sleep(min(10.0, 0.2 * 2**failures))
                continue
            failures = 0
            if len(msgs) > 1 and self.sub.batched:
                await self.handle_batch(msgs)
            else:
                for msg in msgs:
                    await self.handle(msg)

    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        """Apply a batch with at most ``concurrency`` workers in flight, each
        ordering key's messages one after another in fetch order, up to
        ``messages_per_transaction`` of them in one transaction."""
        lanes: dict[str, list[Msg]] = {}
        for msg in msgs:
            lanes.setdefault(ordering_key(msg), []).append(msg)
        pending = iter(lanes.values())
        group_size = self.sub.messages_per_transaction

        async def worker() -> None:
            # One shared iterator: a worker takes the next lane when it is free,
            # and a lane belongs to that one worker, whose groups run one after
            # another (a lane's tail may share a group with the next lane). So
            # a key's messages stay in order, never in two transactions at
            # once, and two groups never lock its rows in opposite orders.
            group: list[Msg] = []
            for lane in pending:
                group.extend(lane)
                while len(group) >= group_size:
                    await self.handle_group(group[:group_size])
                    group = group[group_size:]
            if group:
                await self.handle_group(group)

        workers = min(self.sub.concurrency, len(lanes))
        results = await asyncio.gather(*(worker() for _ in range(workers)), return_exceptions=True)
        # Like the sequential loop, an error that escaped ``handle`` (the nak or
        # the park itself failed) ends the run, once the other lanes are done.
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def handle_group(self, msgs: Sequence[Msg]) -> None:
        """Apply messages in one transaction and ack them; one by one if that fails."""
        if len(msgs) == 1 or self.sub.messages_per_transaction == 1:
            for msg in msgs:
                await self.handle(msg)
            return
        try:
            await self.apply_group(msgs)
        except Exception as exc:
            raise_if_cancelling()
            log.info(
                "%s: a group of %d failed (%s); applying them one by one",
                self.consumer_name,
                len(msgs),
                exc,
            )
            for msg in msgs:
                await self.handle(msg)
            return
        for msg in msgs:
            await msg.ack()

    async def apply_group(self, msgs: Sequence[Msg]) -> None:
        """Apply each message not seen before, all in one transaction with their inbox rows."""
        parsed = [
            (msg, headers, EventEnvelope.from_message(msg.subject, headers, msg.data))
            for msg in msgs
            for headers in (dict(msg.headers or {}),)
        ]
        async with self.uow_factory() as uow:
            fresh = await self.inbox.claim_many(
                uow.session,
                self.consumer_name,
                [e for m, _, e in parsed if m.subject in self.sub.by_subject],
            )
            todo: list[tuple[str, dict[str, str], Any, EventEnvelope, Handler[U]]] = []
            for msg, headers, envelope in parsed:
                subject = msg.subject
                entry = self.sub.by_subject.get(subject)
                if entry is None:
                    log.warning("%s: no handler for %s; acknowledged", self.consumer_name, subject)
                    continue
                if envelope.event_id not in fresh:
                    continue  # applied before, or twice in this group
                fresh.discard(envelope.event_id)
                message_cls, handler = entry
                event = message_cls()
                event.ParseFromString(msg.data)
                todo.append((subject, headers, event, envelope, handler))
            if todo and self.sub.prepare_group is not None:
                with self._prepare_span([h for _, h, _, _, _ in todo]):
                    await self.sub.prepare_group(uow, [(e, env) for _, _, e, env, _ in todo])
            for subject, headers, event, envelope, handler in todo:
                with self._span(subject, headers):
                    await handler(uow, event, envelope)
            await uow.commit()

    @contextlib.contextmanager
    def _span(self, subject: str, headers: Mapping[str, str]) -> Iterator[trace.Span]:
        """The consumer span of one message, child of the producer's context."""
        token = otel_context.attach(propagate.extract(headers))
        try:
            with tracer.start_as_current_span(
                f"consume {subject}", kind=trace.SpanKind.CONSUMER
            ) as span:
                span.set_attribute("tally.service", self.service)
                span.set_attribute("messaging.system", "nats")
                span.set_attribute("messaging.destination.name", subject)
                span.set_attribute("messaging.consumer.group.name", self.consumer_name)
                yield span
        finally:
            otel_context.detach(token)

    @contextlib.contextmanager
    def _prepare_span(self, headers: Sequence[Mapping[str, str]]) -> Iterator[trace.Span]:
        """The span of a group's ``prepare_group``: a child of its first event's
        producer, linked to the other producers. Events published by one call
        (a ClosePeriods run) share its trace, so what the hook reads shows there."""
        parent = propagate.extract(headers[0])
        first = trace.get_current_span(parent).get_span_context()
        seen = {(first.trace_id, first.span_id)}
        links = []
        for h in headers[1:]:
            ctx = trace.get_current_span(propagate.extract(h)).get_span_context()
            if ctx.is_valid and (ctx.trace_id, ctx.span_id) not in seen:
                seen.add((ctx.trace_id, ctx.span_id))
                links.append(trace.Link(ctx))
        token = otel_context.attach(parent)
        try:
            with tracer.start_as_current_span(f"prepare {self.sub.durable}", links=links) as span:
                span.set_attribute("tally.service", self.service)
                span.set_attribute("messaging.consumer.group.name", self.consumer_name)
                span.set_attribute("messaging.batch.message_count", len(headers))
                yield span
        finally:
            otel_context.detach(token)

    async def handle(self, msg: Msg) -> None:
        """Apply one message at most once, then ack; nak or park it on failure."""
        headers = dict(msg.headers or {})
        with self._span(msg.subject, headers) as span:
            try:
                await self.apply(msg.subject, headers, msg.data)
            except Exception as exc:
                span.record_exception(exc)
                await self._on_failure(msg, headers, exc)
                return
            await msg.ack()

    async def apply(self, subject: str, headers: dict[str, str], data: bytes) -> bool:
        """Apply an event in one transaction with its inbox row; False if seen before."""
        envelope = EventEnvelope.from_message(subject, headers, data)
        entry = self.sub.by_subject.get(subject)
        if entry is None:
            log.warning("%s: no handler for %s; acknowledged", self.consumer_name, subject)
            return False
        message_cls, handler = entry
        event = message_cls()
        event.ParseFromString(data)
        async with self.uow_factory() as uow:
            if not await self.inbox.claim(uow.session, self.consumer_name, envelope):
                return False
            await handler(uow, event, envelope)
            await uow.commit()
        return True

    async def _on_failure(self, msg: Msg, headers: dict[str, str], exc: Exception) -> None:
        delivered = int(msg.metadata.num_delivered or 1)
        if delivered >= self.sub.max_deliver:
            log.error(
                "%s: parking %s after %d deliveries: %s",
                self.consumer_name,
                headers.get("Nats-Msg-Id"),
                delivered,
                exc,
            )
            dead_headers = {
                **headers,
                HEADER_DLQ_REASON: f"{type(exc).__name__}: {exc}"[:500],
                HEADER_DLQ_SUBJECT: msg.subject,
                HEADER_DLQ_DELIVERIES: str(delivered),
            }
            # A fresh id: the original one would be deduped against nothing useful,
            # and the same event may be parked by two consumers.
            dead_headers.pop("Nats-Msg-Id", None)
            await self.bus.js.publish(
                dlq_subject(self.service, self.sub.durable), msg.data, headers=dead_headers
            )
            await msg.term()
            return
        backoff = self.sub.backoff_seconds
        delay = backoff[min(delivered - 1, len(backoff) - 1)] if backoff else 0
        log.warning(
            "%s: %s failed on delivery %d (%s); retry in %gs",
            self.consumer_name,
            headers.get("Nats-Msg-Id"),
            delivered,
            exc,
            delay,
        )
        await msg.nak(delay=delay)
