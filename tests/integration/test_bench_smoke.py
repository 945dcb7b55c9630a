"""`make bench` in miniature: the floor, two gRPC paths and the gateway's three
ingestion dialects measured for real, tabled.

Never asserts on speed: only that every event was stored once and that the
table reports each path against the floor measured in the same run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from devtools.bench import floor, ingest, roundtrip, world
from devtools.bench.events import EventPlan
from devtools.bench.report import BenchReport, PathFigure, format_table
from devtools.bench.stats import latency_summary
from services.kit import migrations
from tests.support.gateway import gateway_served, services_for_gateway
from tests.support.usage import Seeder, usage_stack

pytestmark = pytest.mark.integration

EVENTS = 1200  # two 1,000-event calls per path, the second one partial
DIALECT_EVENTS = 300  # three 100-event calls per dialect, over two orgs


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


async def test_each_dialect_figure_stores_every_event_once_through_the_gateway(
    database_url: str, nats_url: str
) -> None:
    # The bench's own world set-up (plan, subscriptions, one API key per org)
    # over the real services, and the gateway served on a port as the bench's is.
    async with (
        services_for_gateway(database_url, nats_url) as settings,
        gateway_served(settings) as base_url,
        grpc.aio.insecure_channel(settings.catalog_addr) as catalog_ch,
        grpc.aio.insecure_channel(settings.subscriptions_addr) as subs_ch,
        grpc.aio.insecure_channel(settings.usage_addr) as usage_ch,
    ):
        plan = await world.create_plan(catalog_ch, "smoke")
        orgs = ["bench-dialect-org-a", "bench-dialect-org-b"]
        subscribed = await world.subscribe(subs_ch, plan, orgs)
        ids = ", ".join(f"'{s.subscription_id}'" for s in subscribed)
        await world.wait_for_rows(
            database_url,
            "SELECT count(*) FROM usage.billing_period"
            f" WHERE NOT closed AND subscription_id IN ({ids})",
            len(orgs),
            what="usage's open periods",
            seconds=30,
        )
        await world.wait_for_rows(
            database_url,
            f"SELECT count(*) FROM usage.metric WHERE code = '{plan.metric_code}' AND active",
            1,
            what="usage's metric",
            seconds=30,
        )
        secret_of = await world.create_api_keys(usage_ch, orgs)
        assert sorted(secret_of) == orgs and len(set(secret_of.values())) == len(orgs)
        at = datetime.now(UTC)
        results = []
        for dialect in ingest.DIALECTS:
            events = EventPlan(dialect, DIALECT_EVENTS, orgs, plan.metric_code, at)
            first = await ingest.dialect_batch(base_url, dialect, events, secret_of, concurrency=2)
            assert (first.accepted, len(first.latencies)) == (DIALECT_EVENTS, 3), dialect
            again = await ingest.dialect_batch(base_url, dialect, events, secret_of, concurrency=2)
            if dialect == "lago":
                assert again.accepted == 0  # Lago's answer says duplicate for each
            results.append(first)

        usage = usage_pb2_grpc.UsageServiceStub(usage_ch)
        counted = 0
        for sub in subscribed:
            reply = await usage.GetAggregate(
                usage_pb2.GetAggregateRequest(
                    subscription_id=sub.subscription_id, metric_code=plan.metric_code
                )
            )
            counted += reply.aggregate.event_count
        # Every event of every dialect once, though each figure was sent twice.
        assert counted == len(ingest.DIALECTS) * DIALECT_EVENTS

    report = BenchReport({"cpus": "test"}, DIALECT_EVENTS, 1.0)
    report.paths = [_figure(r) for r in results]
    table = format_table(report).splitlines()
    for name in ("Lago batch", "OpenMeter batch", "Stripe v2 stream"):
        line = next(row for row in table if row.startswith(f"| {name} (gateway) "))
        figure = next(f for f in report.paths if f.path.startswith(name))
        assert f"| {report.ratio(figure):.2f} " in line
    stored = {row["path"]: row for row in json.loads(report.to_json())["paths"]}
    assert {p: stored[p]["accepted"] for p in stored} == {r.path: DIALECT_EVENTS for r in results}
