"""``tally status``: one screen for ops describing the running suite.

It reads what ops can reach from a compose host without extra credentials:
each service's standard gRPC health check (``<SERVICE>_ADDR``), PostgreSQL
read-only (``DATABASE_URL``, the URL ``tally migrate`` already uses) for outbox
backlogs, the billing clock, the last payment sync and invoices by state, and
NATS (``NATS_URL``) for every durable consumer's pending and redelivered
counts. It asks the servers themselves rather than the services' ``/metrics``,
so it still describes a suite whose services are down. Each part that cannot
be read says why; the others still print.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.cli.health import grpc_status
from services.kit.addresses import all_service_addresses
from services.kit.gauges import ConsumerLag
from services.kit.settings import SERVICE_NAMES

EXIT_UNHEALTHY = 1
# What payments records per sync run (payments/repository/tables.py).
SYNC_TABLE, SYNC_TIME_COLUMN = "sync_state", "update_time"


@dataclass
class ServiceRow:
    service: str
    address: str
    health: str
    outbox_backlog: str  # a count, or why it is unknown


@dataclass
class Status:
    at: datetime
    services: list[ServiceRow] = field(default_factory=list)
    consumers: list[ConsumerLag] = field(default_factory=list)
    consumers_error: str = ""
    billing_clock: str = ""
    payment_sync: str = ""
    invoices: str = ""

    @property
    def healthy(self) -> bool:
        return all(row.health == "SERVING" for row in self.services)


@dataclass(frozen=True)
class _Store:
    """One service's database and schema, from its own settings."""

    url: str
    schema: str

    @classmethod
    def of(cls, service: str) -> _Store:
        from services.kit.settings import load_settings, settings_class_for

        settings = load_settings(settings_class_for(service))
        return cls(settings.sqlalchemy_url, settings.db_schema)

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    async def read(self, sql: str, *, table: str) -> list[tuple[Any, ...]] | None:
        """Rows of a read-only query, or None when ``table`` does not exist (not migrated)."""
        engine = create_async_engine(self.url, poolclass=NullPool, connect_args={"timeout": 5})
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                found = await conn.scalar(
                    text("SELECT to_regclass(:t)"), {"t": f"{self.schema}.{table}"}
                )
                if found is None:
                    return None
                return [tuple(row) for row in (await conn.execute(text(sql))).all()]
        finally:
            await engine.dispose()


def _problem(exc: BaseException) -> str:
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return f"unavailable ({text[:80]})"


async def _outbox_backlog(service: str) -> str:
    try:
        store = _Store.of(service)
        rows = await store.read(
            f"SELECT count(*) FROM {store.table('outbox_event')} WHERE published_at IS NULL",
            table="outbox_event",
        )
    except Exception as exc:
        return _problem(exc)
    return "not migrated" if rows is None else str(rows[0][0])


async def _consumers(nats_url: str) -> list[ConsumerLag]:
    from services.kit.bus import EventBus

    bus = await EventBus.connect(nats_url, name="tally-status", timeout=5)
    try:
        lags: list[ConsumerLag] = []
        for stream in await bus.js.streams_info():
            name = stream.config.name or ""
            lags.extend(ConsumerLag.of(info) for info in await bus.js.consumers_info(name))
        return sorted(lags, key=lambda lag: lag.consumer)
    finally:
        await bus.close()


def _instant(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else "never"


async def _billing_clock() -> str:
    try:
        store = _Store.of("subscriptions")
        rows = await store.read(
            f'SELECT "now" FROM {store.table("billing_clock")} WHERE clock_id = 1',
            table="billing_clock",
        )
    except Exception as exc:
        return _problem(exc)
    if rows is None:
        return "not migrated"
    return f"last run at {_instant(rows[0][0] if rows else None)}"


async def _payment_sync() -> str:
    try:
        store = _Store.of("payments")
        rows = await store.read(
            f"SELECT name, {SYNC_TIME_COLUMN} FROM {store.table(SYNC_TABLE)}"
            f" ORDER BY {SYNC_TIME_COLUMN} DESC LIMIT 1",
            table=SYNC_TABLE,
        )
    except Exception as exc:
        return _problem(exc)
    if rows is None:
        return "unknown (payments has no sync_state table yet)"
    if not rows:
        return "never"
    return f"last at {_instant(rows[0][1])} ({rows[0][0]})"


async def _invoices() -> str:
    try:
        store = _Store.of("invoicing")
        rows = await store.read(
            f"SELECT state, count(*) FROM {store.table('invoice')} GROUP BY state ORDER BY state",
            table="invoice",
        )
    except Exception as exc:
        return _problem(exc)
    if rows is None:
        return "not migrated"
    return ", ".join(f"{state} {count}" for state, count in rows) or "none"


async def collect(nats_url: str, timeout: float = 2.0) -> Status:
    status = Status(at=datetime.now(UTC).replace(microsecond=0))
    addresses = all_service_addresses()
    healths = await asyncio.gather(
        *(asyncio.to_thread(grpc_status, addresses[s], timeout) for s in SERVICE_NAMES)
    )
    backlogs = await asyncio.gather(*(_outbox_backlog(s) for s in SERVICE_NAMES))
    status.services = [
        ServiceRow(s, addresses[s], health, backlog)
        for s, health, backlog in zip(SERVICE_NAMES, healths, backlogs, strict=True)
    ]
    try:
        status.consumers = await _consumers(nats_url)
    except Exception as exc:
        status.consumers_error = _problem(exc)
    status.billing_clock = await _billing_clock()
    status.payment_sync = await _payment_sync()
    status.invoices = await _invoices()
    return status


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [list(headers), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def render(status: Status) -> str:
    lines = [f"Tally status at {_instant(status.at)}", ""]
    lines += _table(
        ("SERVICE", "ADDRESS", "HEALTH", "OUTBOX BACKLOG"),
        [(r.service, r.address, r.health, r.outbox_backlog) for r in status.services],
    )
    lines.append("")
    if status.consumers_error:
        lines.append(f"consumers: {status.consumers_error}")
    else:
        lines += _table(
            ("CONSUMER", "STREAM", "PENDING", "ACK PENDING", "REDELIVERED"),
            [
                (c.consumer, c.stream, c.pending, c.ack_pending, c.redelivered)
                for c in status.consumers
            ],
        )
    lines.append("")
    lines += _table(
        ("", ""),
        [
            ("billing clock", status.billing_clock),
            ("payment sync", status.payment_sync),
            ("invoices", status.invoices),
        ],
    )[1:]
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    status = asyncio.run(collect(nats_url, args.timeout))
    print(render(status))
    return 0 if status.healthy else EXIT_UNHEALTHY


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = commands.add_parser(
        "status",
        help="one screen: health, outbox backlogs, consumer lag, billing clock, invoices"
        " (<SERVICE>_ADDR, DATABASE_URL read-only, NATS_URL)",
    )
    status.add_argument(
        "--timeout", type=float, default=2.0, help="seconds per health check (default 2)"
    )
    status.set_defaults(func=_status)
