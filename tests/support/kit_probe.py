"""A tiny producer and consumer built only from kit parts, for the kit's own tests.

``kit_probe`` records probes and emits ``KitProbeEvent``; ``kit_sink`` counts
how many times each probe's event was applied. The count is deliberately not
idempotent by itself (``applied = applied + 1``): only the inbox can keep it
at one, so a test that sees 2 has caught a double delivery getting through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, Table, Text, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from tally.events.v1 import kit_events_pb2

from services.kit.bus import EventBus
from services.kit.consumer import EventConsumer, Inbox, Subscription
from services.kit.db import Database
from services.kit.events import EventEnvelope
from services.kit.outbox import Outbox, OutboxRelay
from services.kit.tables import service_metadata
from services.kit.uow import UnitOfWork

PROBE_SCHEMA = "kit_probe"
SINK_SCHEMA = "kit_sink"

probe_metadata = service_metadata(PROBE_SCHEMA)
probe_table = Table(
    "probe", probe_metadata, Column("probe_id", Text, primary_key=True), Column("note", Text)
)

sink_metadata = service_metadata(SINK_SCHEMA)
seen_table = Table(
    "probe_seen",
    sink_metadata,
    Column("probe_id", Text, primary_key=True),
    Column("applied", Integer, nullable=False),
    Column("last_sequence", Integer, nullable=False),
)


async def create_schema(database: Database, metadata: MetaData) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{metadata.schema}"'))
        await conn.run_sync(metadata.create_all)


@asynccontextmanager
async def probe_databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """The producer's and the consumer's schemas, created in one database."""
    producer = Database(database_url, PROBE_SCHEMA)
    consumer = Database(database_url, SINK_SCHEMA)
    try:
        await create_schema(producer, probe_metadata)
        await create_schema(consumer, sink_metadata)
        yield producer, consumer
    finally:
        await producer.dispose()
        await consumer.dispose()


@dataclass
class Probe:
    """The producer side: a use case that writes a row and an event together."""

    database: Database
    bus: EventBus

    def __post_init__(self) -> None:
        self.outbox = Outbox(probe_metadata.tables[f"{PROBE_SCHEMA}.outbox_event"])
        self.relay = OutboxRelay(self.database, self.bus, self.outbox, poll_seconds=0.05)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.database, self.outbox, on_events_committed=self.relay.wake)

    async def record(
        self,
        probe_id: str,
        note: str = "",
        sequence: int = 0,
        *,
        fail: bool = False,
        ordering_key: str = "",
    ) -> None:
        async with self.uow() as uow:
            await uow.session.execute(pg_insert(probe_table).values(probe_id=probe_id, note=note))
            uow.emit(
                kit_events_pb2.KitProbeEvent(probe_id=probe_id, note=note, sequence=sequence),
                aggregate_id=probe_id.split("/")[0],
                ordering_key=ordering_key,
            )
            if fail:
                raise RuntimeError("use case failed after writing")
            await uow.commit()

    async def pending(self) -> int:
        async with self.database.session() as session:
            return await self.outbox.pending_count(session)


async def count_applied(
    uow: UnitOfWork, event: kit_events_pb2.KitProbeEvent, envelope: EventEnvelope
) -> None:
    stmt = pg_insert(seen_table).values(
        probe_id=event.probe_id, applied=1, last_sequence=event.sequence
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[seen_table.c.probe_id],
        set_={"applied": seen_table.c.applied + 1, "last_sequence": stmt.excluded.last_sequence},
    )
    await uow.session.execute(stmt)


@dataclass
class Sink:
    """The consumer side, with its own schema, inbox and unit of work."""

    database: Database
    bus: EventBus

    def __post_init__(self) -> None:
        self.outbox = Outbox(sink_metadata.tables[f"{SINK_SCHEMA}.outbox_event"])
        self.inbox = Inbox(sink_metadata.tables[f"{SINK_SCHEMA}.inbox_message"])

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.database, self.outbox)

    def consumer(
        self,
        durable: str = "probe-counter",
        handler: object = count_applied,
        *,
        max_deliver: int = 5,
        backoff: tuple[float, ...] = (0.1,),
        ack_wait: float = 30.0,
        concurrency: int = 1,
        messages_per_transaction: int = 1,
    ) -> EventConsumer[UnitOfWork]:
        subscription: Subscription[UnitOfWork] = Subscription(
            durable=durable,
            handlers={kit_events_pb2.KitProbeEvent: handler},  # type: ignore[dict-item]
            max_deliver=max_deliver,
            backoff_seconds=backoff,
            ack_wait_seconds=ack_wait,
            concurrency=concurrency,
            messages_per_transaction=messages_per_transaction,
        )
        return EventConsumer(
            "kit-sink", self.bus, self.uow, self.inbox, subscription, fetch_timeout=0.2
        )

    async def applied(self) -> dict[str, int]:
        async with self.database.session() as session:
            rows = (
                await session.execute(select(seen_table.c.probe_id, seen_table.c.applied))
            ).all()
        return {r.probe_id: r.applied for r in rows}

    async def reset(self) -> None:
        async with self.database.session() as session, session.begin():
            await session.execute(seen_table.delete())
            await session.execute(self.inbox.table.delete())


async def reset_probe(probe: Probe) -> None:
    async with probe.database.session() as session, session.begin():
        await session.execute(probe_table.delete())
        await session.execute(probe.outbox.table.delete())


__all__ = ["Probe", "Sink", "count_applied", "create_schema", "reset_probe"]
