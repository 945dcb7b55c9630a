"""One bench run: start the suite, measure each figure in turn, print the table."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc
import psutil

from devtools.bench import billing, floor, ingest, latency, world
from devtools.bench.events import EVENTS_PER_ORG_RUN, EventPlan
from devtools.bench.report import BenchReport, PathFigure, format_table, write
from devtools.bench.stack import running_suite, sampler_for
from devtools.bench.stats import latency_summary
from services.kit import eventloop
from services.kit.devstack.interrupts import Interrupted
from services.kit.devstack.suite import Suite
from services.kit.rpc.channels import round_robin_options

T = TypeVar("T")
RESULTS = Path("bench/results")
# None by default: on 2 cores a second subscriptions process made
# CheckEntitlement's tail worse (p99 19-38 against 10-14 ms with one; the
# client and two servers contend for the cores). For bigger machines.
DEFAULT_API_REPLICAS = ""
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 * 2**20)]


@dataclass(frozen=True)
class Sizes:
    subscriptions: int
    events: int
    single_events: int
    http_events: int
    dialect_events: int
    entitlement_rate: float
    entitlement_seconds: float
    preview_calls: int


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "postgres": "embedded, durable (fsync on, synchronous_commit on)",
    }


def step(title: str) -> Callable[[Awaitable[T]], Awaitable[T]]:
    async def timed(work: Awaitable[T]) -> T:
        print(f"  {title} ...", end="", flush=True)
        started = time.perf_counter()
        value = await work
        print(f" {time.perf_counter() - started:.1f}s", flush=True)
        return value

    return timed


def figure(result: ingest.IngestResult) -> PathFigure:
    s = latency_summary(result.latencies)
    print(f"    {result.path}: {result.events_per_second:,.0f} events/s", flush=True)
    return PathFigure(
        result.path, result.events, result.accepted, result.seconds, s["p50_ms"], s["p99_ms"]
    )


def _service_token() -> str:
    from gateway.auth import issue_dev_token
    from services.kit.settings import DEV_HS256_SECRET, GatewaySettings

    settings = GatewaySettings()
    return issue_dev_token(
        settings.jwt_hs256_secret or DEV_HS256_SECRET,
        subject="service:bench",
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        ttl_seconds=3600,
        service="bench",
    )


async def measure(suite: Suite, sizes: Sizes, report: BenchReport) -> None:
    def channel(service: str) -> grpc.aio.Channel:
        # Round robin over the service's processes (one, unless it has API replicas).
        return grpc.aio.insecure_channel(
            suite.service_target(service), options=[*GRPC_OPTIONS, *round_robin_options()]
        )

    async def settle() -> None:
        if not await step("  settle: outboxes and consumers idle")(
            world.wait_quiet(suite.database_url, suite.nats.url)
        ):
            print("    (still busy: measuring beside the backlog)", flush=True)

    async with (
        channel("catalog") as catalog_ch,
        channel("subscriptions") as subs_ch,
        channel("usage") as usage_ch,
        channel("invoicing") as invoicing_ch,
    ):
        plan = await step("catalog: metric and package")(world.create_plan(catalog_ch, "bench"))
        orgs = [world.org_id(i) for i in range(sizes.subscriptions)]
        subscribed = await step(f"subscriptions: {len(orgs):,} (one CreateSubscription each)")(
            world.subscribe(subs_ch, plan, orgs)
        )
        await step("usage: projections caught up")(
            world.wait_usage_ready(suite.database_url, len(subscribed))
        )
        # A dialect call is one org's (its API key's); every org gets one.
        secret_of = await step(f"usage: {len(orgs):,} ingestion API keys")(
            world.create_api_keys(usage_ch, orgs)
        )
        at = datetime.now(UTC)
        subscription_of = {s.org_id: s.subscription_id for s in subscribed}

        def events(prefix: str, count: int, run: int = EVENTS_PER_ORG_RUN) -> EventPlan:
            return EventPlan(prefix, count, orgs, plan.metric_code, at, run)

        await settle()
        report.floor_seconds = await step(f"floor: COPY {sizes.events:,} rows")(
            floor.copy_floor(
                suite.database_url,
                events("floor", sizes.events),
                subscription_of=subscription_of,
                period_start=subscribed[0].period_start,
            )
        )
        report.floor_events = sizes.events
        print(f"    floor: {report.floor_eps:,.0f} events/s", flush=True)
        await settle()
        stream = await step(f"StreamUsage: {sizes.events:,} events")(
            ingest.stream_usage(usage_ch, events("stream", sizes.events))
        )
        report.paths.append(figure(stream))
        await settle()
        batch = await step(f"RecordUsageBatch: {sizes.events:,} events")(
            ingest.record_usage_batch(usage_ch, events("batch", sizes.events))
        )
        report.paths.append(figure(batch))
        await settle()
        single = await step(f"RecordUsage: {sizes.single_events:,} events")(
            ingest.record_usage_single(usage_ch, events("single", sizes.single_events, run=1))
        )
        report.paths.append(figure(single))
        await settle()
        http = await step(f"gateway HTTP batch: {sizes.http_events:,} events")(
            ingest.http_batch(
                suite.gateway_url, _service_token(), events("http", sizes.http_events)
            )
        )
        report.paths.append(figure(http))
        for dialect in ingest.DIALECTS:
            await settle()
            spoken = await step(f"gateway {dialect}: {sizes.dialect_events:,} events")(
                ingest.dialect_batch(
                    suite.gateway_url, dialect, events(dialect, sizes.dialect_events), secret_of
                )
            )
            report.paths.append(figure(spoken))

        await settle()
        latencies, errors, sent_rate = await step(
            f"CheckEntitlement: {sizes.entitlement_rate:g}/s for {sizes.entitlement_seconds:g}s"
        )(
            latency.check_entitlement_at_rate(
                subs_ch, orgs, rate=sizes.entitlement_rate, seconds=sizes.entitlement_seconds
            )
        )
        report.entitlement = {**latency_summary(latencies), "errors": errors, "rate": sent_rate}
        await settle()
        previews = await step(f"PreviewInvoice: {sizes.preview_calls} calls")(
            latency.preview_invoices(invoicing_ch, subscribed, calls=sizes.preview_calls)
        )
        report.preview = {**latency_summary(previews), "concurrency": 4}

        await settle()
        close_seconds, total_seconds, closed = await step(
            f"billing run: {len(subscribed):,} subscriptions"
        )(
            billing.billing_run(
                subs_ch,
                suite.database_url,
                close_at=max(s.period_end for s in subscribed),
                subscriptions=len(subscribed),
            )
        )
        report.billing = {
            "subscriptions": len(subscribed),
            "periods_closed": closed,
            "close_seconds": close_seconds,
            "total_seconds": total_seconds,
        }


def replica_counts(text: str) -> dict[str, int]:
    """``subscriptions=1,usage=1`` -> {"subscriptions": 1, "usage": 1}."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, _, count = part.partition("=")
        try:
            counts[service.strip()] = int(count)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not service=count: {part!r}") from None
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench",
        description="Start the embedded suite, measure it against the raw COPY floor,"
        " print one table (also written under bench/results/).",
    )
    parser.add_argument(
        "--subscriptions",
        type=int,
        default=int(os.environ.get("BENCH_SUBSCRIPTIONS", "2000")),
        help="billing run size (BENCH_SUBSCRIPTIONS; 10000 is the target's, ~15 min here)",
    )
    parser.add_argument("--events", type=int, default=100_000, help="per gRPC batch/stream path")
    parser.add_argument("--single-events", type=int, default=2000, help="RecordUsage one by one")
    parser.add_argument("--http-events", type=int, default=50_000, help="gateway batch route")
    parser.add_argument(
        "--dialect-events",
        type=int,
        default=50_000,
        help="per ingestion dialect (Lago, OpenMeter, Stripe v2), 100 per call",
    )
    parser.add_argument("--entitlement-rate", type=float, default=1000.0)
    parser.add_argument("--entitlement-seconds", type=float, default=10.0)
    parser.add_argument("--preview-calls", type=int, default=500)
    parser.add_argument(
        "--api-replicas",
        type=replica_counts,
        default=replica_counts(os.environ.get("BENCH_API_REPLICAS", DEFAULT_API_REPLICAS)),
        help="extra API-only processes, e.g. subscriptions=1 (BENCH_API_REPLICAS;"
        f" default {DEFAULT_API_REPLICAS}, '' for none)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes(
        args.subscriptions,
        args.events,
        args.single_events,
        args.http_events,
        args.dialect_events,
        args.entitlement_rate,
        args.entitlement_seconds,
        args.preview_calls,
    )
    report = BenchReport(machine(), 0, 0.0)
    replicas = [f"; {s}: {1 + n} (the extra API-only)" for s, n in args.api_replicas.items() if n]
    report.machine["processes"] = "one per service" + "".join(replicas)
    print("make bench: starting the embedded suite (durable PostgreSQL) ...", flush=True)
    started = time.perf_counter()
    try:
        with running_suite(api_replicas=args.api_replicas) as (suite, interrupts):
            print(f"  suite up in {time.perf_counter() - started:.1f}s", flush=True)
            sampler = sampler_for(suite).start()
            try:
                # The client on the services' loop: its CPU shares the same 2 cores.
                interrupts.run(measure(suite, sizes, report), runner=eventloop.run)
            finally:
                sampler.stop()
            report.peak_rss_bytes = sampler.peak_rss()
            report.mean_cpu_percent = sampler.mean_cpu()
    except Interrupted as interrupted:
        print(f"make bench: interrupted by {interrupted}; no table written", flush=True)
        return interrupted.exit_status
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path, md_path = write(report, args.out, stamp)
    print()
    print(format_table(report))
    print(f"\nwritten: {json_path} and {md_path} ({time.perf_counter() - started:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
