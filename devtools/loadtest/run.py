"""The load test itself: ingest ``--days`` of usage in jobs, close the period, invoice it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc
from tally.invoicing.v1 import resources_pb2 as invoicing
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from tally.usage.v1 import resources_pb2 as usage
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from devtools.bench.procs import ProcessSampler
from devtools.loadtest.backlog import sample_backlog
from devtools.loadtest.processes import find_suite
from devtools.loadtest.report import LoadTestReport, write
from services.kit.devstack.interrupts import Interrupts

DEADLINE = 60.0
T = TypeVar("T")


@dataclass(frozen=True)
class LoadTestConfig:
    org_id: str
    subscription_id: str
    days: int
    usage_jobs: int
    concurrency: int
    metric_code: str
    events_per_day: int
    batch_size: int
    close: bool
    addresses: dict[str, str]
    database_url: str | None
    nats_url: str | None
    out: Path

    @property
    def total_events(self) -> int:
        return self.days * self.events_per_day


def _stamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def job_slices(total: int, jobs: int) -> list[range]:
    """``total`` events cut into ``jobs`` contiguous slices whose sizes differ by at most one."""
    jobs = max(1, min(jobs, total)) if total else 1
    size, extra = divmod(total, jobs)
    slices = []
    start = 0
    for j in range(jobs):
        stop = start + size + (1 if j < extra else 0)
        slices.append(range(start, stop))
        start = stop
    return slices


def event_times(total: int, start: datetime, end: datetime) -> Callable[[int], datetime]:
    """Event ``i``'s time: spread evenly over [start, end)."""
    span = (end - start) / max(1, total)
    return lambda i: start + span * i


async def _timed(report: LoadTestReport, rpc: str, call: Any) -> Any:
    started = time.perf_counter()
    try:
        return await call
    finally:
        report.record(rpc, time.perf_counter() - started)


class LoadTest:
    def __init__(self, config: LoadTestConfig, progress: Any) -> None:
        self.config = config
        self.progress = progress
        run = datetime.now(UTC)
        self.run_id = run.strftime("%Y%m%dT%H%M%SZ")
        config_view = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in asdict(config).items()
            if k not in ("addresses",)
        }
        self.report = LoadTestReport(config=config_view, started_at=run.isoformat())
        self.started = time.perf_counter()

    async def run(self) -> LoadTestReport:
        cfg = self.config
        stop = asyncio.Event()
        sampler = ProcessSampler(
            find_suite(cfg.addresses, cfg.database_url, cfg.nats_url),
            trees=frozenset({"postgres"}),
            interval=0.5,
        )
        if not sampler.pids:
            self.report.notes.append("no suite process found on this machine: no CPU/RSS series")
        sampler.start()
        backlog = asyncio.create_task(
            sample_backlog(
                self.report.backlog,
                stop,
                started=self.started,
                database_url=cfg.database_url,
                nats_url=cfg.nats_url,
            )
        )
        try:
            async with (
                grpc.aio.insecure_channel(cfg.addresses["usage"]) as usage_ch,
                grpc.aio.insecure_channel(cfg.addresses["subscriptions"]) as subs_ch,
                grpc.aio.insecure_channel(cfg.addresses["invoicing"]) as inv_ch,
            ):
                subs = subscriptions_pb2_grpc.SubscriptionsServiceStub(subs_ch)
                got = await _timed(
                    self.report,
                    "GetSubscription",
                    subs.GetSubscription(
                        subscriptions_pb2.GetSubscriptionRequest(
                            subscription_id=cfg.subscription_id
                        ),
                        timeout=DEADLINE,
                    ),
                )
                sub = got.subscription
                period_start = sub.current_period_start_time.ToDatetime(tzinfo=UTC)
                period_end = sub.current_period_end_time.ToDatetime(tzinfo=UTC)
                await self.ingest(usage_ch, inv_ch, period_start)
                await self.drain()
                if cfg.close:
                    await self.close_and_invoice(subs, inv_ch, period_start, period_end)
        finally:
            stop.set()
            await backlog
            sampler.stop()
            self.report.processes = sampler.samples
        return self.report

    async def ingest(
        self, usage_ch: grpc.aio.Channel, inv_ch: grpc.aio.Channel, period_start: datetime
    ) -> None:
        cfg = self.config
        api = usage_pb2_grpc.UsageServiceStub(usage_ch)
        now = datetime.now(UTC)
        start = max(period_start, now - timedelta(days=cfg.days))
        if start > now - timedelta(days=cfg.days):
            self.report.notes.append(
                f"the current period started {start.isoformat()}: the {cfg.days} days of"
                " usage are compressed into the time since then (usage before a period"
                " start would be rejected)"
            )
        total = cfg.total_events
        time_of = event_times(total, start, now)
        prefix = f"lt-{self.run_id}"
        jobs = list(reversed(job_slices(total, cfg.usage_jobs)))
        self.report.events_sent = total

        def batch(indices: Sequence[int]) -> usage_pb2.RecordUsageBatchRequest:
            return usage_pb2.RecordUsageBatchRequest(
                events=[
                    usage.UsageEvent(
                        org_id=cfg.org_id,
                        subscription_id=cfg.subscription_id,
                        metric_code=cfg.metric_code,
                        idempotency_key=f"{prefix}-{i}",
                        event_time=_stamp(time_of(i)),
                    )
                    for i in indices
                ]
            )

        async def worker() -> None:
            while jobs:
                job = jobs.pop()
                for first in range(job.start, job.stop, cfg.batch_size):
                    request = batch(range(first, min(first + cfg.batch_size, job.stop)))
                    reply = await _timed(
                        self.report,
                        "RecordUsageBatch",
                        api.RecordUsageBatch(request, timeout=DEADLINE),
                    )
                    self.report.accepted += reply.accepted_count
                    self.report.duplicates += reply.duplicate_count
                    self.report.rejected += reply.rejected_count
                    self.report.progress.append(
                        (time.perf_counter() - self.started, self.report.accepted)
                    )
                    self.progress.update(len(request.events))

        probe_stop = asyncio.Event()
        probe = asyncio.create_task(self.probe_reads(api, inv_ch, probe_stop))
        began = time.perf_counter()
        self.report.progress.append((began - self.started, 0))
        try:
            await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        finally:
            self.report.ingest_seconds = time.perf_counter() - began
            probe_stop.set()
            await probe

    async def probe_reads(
        self,
        api: usage_pb2_grpc.UsageServiceStub,
        inv_ch: grpc.aio.Channel,
        stop: asyncio.Event,
    ) -> None:
        """Read RPCs beside the load, twice a second: what a dashboard sees meanwhile."""
        cfg = self.config
        invoicing_api = invoicing_pb2_grpc.InvoicingServiceStub(inv_ch)
        while not stop.is_set():
            try:
                await _timed(
                    self.report,
                    "GetAggregate",
                    api.GetAggregate(
                        usage_pb2.GetAggregateRequest(
                            subscription_id=cfg.subscription_id, metric_code=cfg.metric_code
                        ),
                        timeout=DEADLINE,
                    ),
                )
                await _timed(
                    self.report,
                    "PreviewInvoice",
                    invoicing_api.PreviewInvoice(
                        invoicing_pb2.PreviewInvoiceRequest(
                            org_id=cfg.org_id, subscription_id=cfg.subscription_id
                        ),
                        timeout=DEADLINE,
                    ),
                )
            except grpc.aio.AioRpcError as err:
                self.report.notes.append(f"read probe failed: {err.code().name}: {err.details()}")
                return
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                continue

    async def drain(self, seconds: float = 60) -> None:
        """Wait (bounded) until every outbox is published: the load has fully passed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            latest = [points[-1][1] for points in self.report.backlog.outbox.values() if points]
            if not latest or not any(latest):
                return
            await asyncio.sleep(0.5)

    async def close_and_invoice(
        self,
        subs: subscriptions_pb2_grpc.SubscriptionsServiceStub,
        inv_ch: grpc.aio.Channel,
        period_start: datetime,
        period_end: datetime,
        seconds: float = 300,
    ) -> None:
        """Run the billing clock at the period's end, then wait for its finalized invoice."""
        cfg = self.config
        api = invoicing_pb2_grpc.InvoicingServiceStub(inv_ch)
        began = time.perf_counter()
        closed = await _timed(
            self.report,
            "ClosePeriods",
            subs.ClosePeriods(
                subscriptions_pb2.ClosePeriodsRequest(now=_stamp(period_end)), timeout=DEADLINE
            ),
        )
        closing = time.perf_counter() - began
        deadline = time.monotonic() + seconds
        while True:
            listed = await _timed(
                self.report,
                "ListInvoices",
                api.ListInvoices(
                    invoicing_pb2.ListInvoicesRequest(
                        org_id=cfg.org_id, subscription_id=cfg.subscription_id, omit_lines=True
                    ),
                    timeout=DEADLINE,
                ),
            )
            done = [
                inv
                for inv in listed.invoices
                if inv.reason == invoicing.INVOICE_REASON_PERIOD_CLOSE
                and inv.period_start_time.ToDatetime(tzinfo=UTC) == period_start
                and inv.state != invoicing.INVOICE_STATE_DRAFT
            ]
            if done:
                invoice = done[0]
                self.report.billing = {
                    "periods closed by this run": len(closed.closed_periods),
                    "close seconds": round(closing, 3),
                    "close to finalized invoice seconds": round(time.perf_counter() - began, 3),
                    "invoice": invoice.number or invoice.invoice_id,
                    "invoice total": f"{invoice.total.amount_minor} {invoice.total.currency_code}"
                    " (minor units)",
                }
                return
            if time.monotonic() > deadline:
                self.report.notes.append(f"no finalized invoice after {seconds:g}s")
                return
            await asyncio.sleep(0.25)


def run(config: LoadTestConfig) -> tuple[LoadTestReport, Path, Path]:
    from tqdm import tqdm  # type: ignore[import-untyped]

    with tqdm(total=config.total_events, unit="ev", desc="usage", dynamic_ncols=True) as bar:
        test = LoadTest(config, bar)
        # It starts nothing: a signal only cancels its calls (Interrupted).
        with Interrupts(child_pids=tuple) as interrupts:
            report = interrupts.run(test.run())
    json_path, md_path = write(report, config.out, f"loadtest-{test.run_id}")
    return report, json_path, md_path
