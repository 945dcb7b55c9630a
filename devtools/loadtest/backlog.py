"""Outbox backlog (per service) and consumer pending (per durable consumer) over time."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import nats

from services.kit.settings import SERVICE_NAMES

log = logging.getLogger(__name__)


@dataclass
class BacklogSeries:
    """Samples as (seconds since start, value), one list per series name."""

    outbox: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    pending: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def _outbox_counts(conn: asyncpg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for service in SERVICE_NAMES:
        try:
            counts[service] = int(
                await conn.fetchval(
                    f"SELECT count(*) FROM {service}.outbox_event WHERE published_at IS NULL"
                )
            )
        except asyncpg.PostgresError:
            continue  # a schema without an outbox (or not migrated): nothing to wait for
    return counts


async def _consumer_pending(js: Any) -> dict[str, int]:
    pending: dict[str, int] = {}
    for stream in await js.streams_info():
        name = stream.config.name
        for info in await js.consumers_info(name):
            pending[f"{name}/{info.name}"] = int(info.num_pending or 0) + int(
                info.num_ack_pending or 0
            )
    return pending


async def sample_backlog(
    series: BacklogSeries,
    stop: asyncio.Event,
    *,
    started: float,
    database_url: str | None,
    nats_url: str | None,
    interval: float = 1.0,
) -> None:
    """Sample until ``stop`` is set; a source that cannot be reached is noted, not fatal."""
    conn: asyncpg.Connection | None = None
    nc: Any = None
    js: Any = None
    if database_url:
        try:
            conn = await asyncpg.connect(database_url)
        except (OSError, asyncpg.PostgresError) as exc:
            series.notes.append(f"outbox backlog not sampled: {exc}")
    else:
        series.notes.append("outbox backlog not sampled: no --database-url / DATABASE_URL")
    if nats_url:
        try:
            nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
            js = nc.jetstream()
        except Exception as exc:  # nats-py raises several unrelated types here
            series.notes.append(f"consumer pending not sampled: {exc}")
    else:
        series.notes.append("consumer pending not sampled: no --nats-url / NATS_URL")
    try:
        while True:
            at = time.perf_counter() - started
            if conn is not None:
                for name, value in (await _outbox_counts(conn)).items():
                    series.outbox.setdefault(name, []).append((at, value))
            if js is not None:
                for name, value in (await _consumer_pending(js)).items():
                    series.pending.setdefault(name, []).append((at, value))
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                continue
    finally:
        if conn is not None:
            await conn.close()
        if nc is not None:
            await nc.close()
