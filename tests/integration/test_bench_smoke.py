"""`make bench` in miniature: the floor and two gRPC paths measured for real, tabled.

Never asserts on speed: only that every event was stored once and that the
table reports each path against the floor measured in the same run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest

from devtools.bench import floor, ingest, roundtrip
from devtools.bench.events import EventPlan
from devtools.bench.report import BenchReport, PathFigure, format_table
from devtools.bench.stats import latency_summary
from services.kit import migrations
from tests.support.usage import Seeder, usage_stack

pytestmark = pytest.mark.integration

EVENTS = 1200  # two 1,000-event calls per path, the second one partial


@pytest.fixture(scope="module")
async def stack(database_url: str, nats_url: str) -> AsyncIterator[tuple[Any, Seeder]]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (runtime, _stub, seeder, _bus):
        await seeder.metrics()
        yield runtime, seeder


def _figure(result: ingest.IngestResult) -> PathFigure:
    s = latency_summary(result.latencies)
    return PathFigure(
        result.path, result.events, result.accepted, result.seconds, s["p50_ms"], s["p99_ms"]
    )


async def test_a_tiny_bench_run_stores_every_event_once_and_tables_it(
    stack: tuple[Any, Seeder], database_url: str
) -> None:
    runtime, seeder = stack
    orgs = ["bench-org-a", "bench-org-b"]
    subs = {org: await seeder.subscription(org) for org in orgs}
    at = datetime.now(UTC)

    def plan(prefix: str) -> EventPlan:
        return EventPlan(prefix, EVENTS, orgs, "api_calls", at)

    floor_seconds = await floor.copy_floor(
        database_url,
        plan("floor"),
        subscription_of={org: sub[0] for org, sub in subs.items()},
        period_start=next(iter(subs.values()))[1],
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        streamed = await ingest.stream_usage(channel, plan("stream"), streams=2, window=2)
        batched = await ingest.record_usage_batch(channel, plan("batch"), concurrency=2)
        again = await ingest.record_usage_batch(channel, plan("batch"), concurrency=2)

    assert streamed.accepted == batched.accepted == EVENTS
    assert again.accepted == 0  # the same keys again: all duplicates
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM bench_floor.usage_event") == EVENTS
        stored = await conn.fetchval(
            "SELECT sum(event_count) FROM usage.usage_aggregate WHERE org_id = ANY($1)", orgs
        )
        assert stored == 2 * EVENTS
    finally:
        await conn.close()

    report = BenchReport({"cpus": "test"}, EVENTS, floor_seconds)
    report.paths = [_figure(streamed), _figure(batched)]
    table = format_table(report).splitlines()
    for figure in report.paths:
        line = next(row for row in table if row.startswith(f"| {figure.path} "))
        assert f"| {report.ratio(figure):.2f} " in line
        assert f"{figure.events_per_second:,.0f} ev/s" in line
    assert any(row.startswith("| floor: asyncpg COPY") for row in table)


async def test_the_round_trip_probe_measures_both_layers_on_the_same_read(
    database_url: str,
) -> None:
    rows = await roundtrip.measure(database_url, calls=20)
    assert [what for what, _, _ in rows] == [
        "one read by primary key, inside a transaction",
        "a transaction: begin, that read, commit",
    ]
    assert all(raw > 0 and kit > 0 for _, raw, kit in rows)
    printed = roundtrip.table(rows).splitlines()
    assert len(printed) == 4 and printed[2].startswith("| one read by primary key")
