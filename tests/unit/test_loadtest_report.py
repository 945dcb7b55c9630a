"""The load test's maths and report writer, and the bench table, without a suite."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.bench.procs import ProcessSample
from devtools.bench.report import BenchReport, PathFigure, format_table
from devtools.bench.stats import latency_summary, percentile
from devtools.loadtest.report import LoadTestReport, write
from devtools.loadtest.run import event_times, job_slices


def test_percentile_is_nearest_rank() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100, shuffled below
    shuffled = samples[50:] + samples[:50]
    assert percentile(shuffled, 50) == 50
    assert percentile(shuffled, 95) == 95
    assert percentile(shuffled, 99) == 99
    assert percentile(shuffled, 100) == 100
    assert percentile(shuffled, 0) == 1
    assert percentile([7.0], 99) == 7
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2  # a latency someone really had
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(samples, 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.001 * i for i in range(1, 1001)])  # 1..1000 ms
    assert summary["count"] == 1000
    assert summary["p50_ms"] == pytest.approx(500)
    assert summary["p95_ms"] == pytest.approx(950)
    assert summary["p99_ms"] == pytest.approx(990)
    assert summary["max_ms"] == pytest.approx(1000)


def test_jobs_cover_every_event_once() -> None:
    slices = job_slices(1003, 25)
    assert len(slices) == 25
    assert [i for s in slices for i in s] == list(range(1003))
    assert max(len(s) for s in slices) - min(len(s) for s in slices) <= 1
    assert job_slices(3, 25) == [range(0, 1), range(1, 2), range(2, 3)]


def test_event_times_spread_over_the_window() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = start + timedelta(days=3)
    at = event_times(300, start, end)
    assert at(0) == start
    assert at(150) == start + timedelta(days=1.5)
    assert start <= at(299) < end


def _report() -> LoadTestReport:
    report = LoadTestReport(config={"days": 3, "usage_jobs": 25}, started_at="2026-11-30T09:00")
    report.events_sent = 3000
    report.accepted = 2990
    report.duplicates = 10
    report.ingest_seconds = 2.0
    report.progress = [(0.0, 0), (1.0, 1500), (2.0, 2990)]
    for ms in range(1, 101):
        report.record("RecordUsageBatch", ms / 1000)
    report.record("ClosePeriods", 0.25)
    report.backlog.outbox = {"usage": [(0.0, 0), (1.0, 12), (2.0, 0)]}
    report.backlog.pending = {"TALLY_USAGE/subscriptions-usage-projection": [(0.0, 3), (1.0, 0)]}
    report.processes = {
        "usage": [ProcessSample(0.0, 0.0, 100 * 2**20), ProcessSample(1.0, 80.0, 120 * 2**20)]
    }
    report.billing = {"close seconds": 0.2}
    return report


def test_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    json_path, md_path = write(_report(), tmp_path, "loadtest-x")

    data = json.loads(json_path.read_text())
    assert data["ingestion"]["events_per_second"] == 1495
    assert data["latency_ms"]["RecordUsageBatch"]["p99_ms"] == pytest.approx(99)
    assert data["latency_ms"]["RecordUsageBatch"]["p50_ms"] == pytest.approx(50)
    assert data["processes"]["usage"]["peak_rss_bytes"] == 120 * 2**20
    assert data["outbox_backlog"]["usage"][1] == [1.0, 12]

    summary = md_path.read_text()
    assert "**1,495 events/s**" in summary
    assert "| RecordUsageBatch | 100 | 50.0 | 95.0 | 99.0 | 100.0 |" in summary
    assert "outbox usage: peak 12, last 0" in summary
    assert "| usage | 120 | 80 |" in summary
    plots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert plots == [
        "loadtest-x-consumers.png",
        "loadtest-x-outbox.png",
        "loadtest-x-processes.png",
        "loadtest-x-throughput.png",
    ]
    assert all(f"]({name})" in summary for name in plots)
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in plots)


def test_bench_table_divides_each_path_by_the_floor() -> None:
    report = BenchReport({"cpus": "2"}, floor_events=100_000, floor_seconds=2.0)
    report.paths = [
        PathFigure("StreamUsage", 100_000, 100_000, 4.0, 10.0, 20.0),  # 25,000/s: 0.50
        PathFigure("HTTP batch (gateway)", 50_000, 50_000, 2.0, 5.0, 9.0),  # 25,000/s
    ]
    report.entitlement = {
        "rate": 1000.0,
        "count": 10_000.0,
        "errors": 0,
        "p50_ms": 1.0,
        "p99_ms": 4.0,
    }
    report.billing = {"subscriptions": 1000, "close_seconds": 1.0, "total_seconds": 5.0}

    table = format_table(report)

    assert "| floor: asyncpg COPY into a twin table (100,000 rows)" in table
    assert "50,000 ev/s" in table
    stream = next(line for line in table.splitlines() if line.startswith("| StreamUsage"))
    assert "25,000 ev/s" in stream
    assert "| 0.50 " in stream
    assert "MISSED" in stream  # 25,000 < 50,000
    http = next(line for line in table.splitlines() if line.startswith("| HTTP batch"))
    assert ">= 20,000 ev/s: met" in http
    assert "p99 < 5 ms at 1,000 req/s: met" in table
    assert "scaled to 10,000: 50.0 s" in table
    assert json.loads(report.to_json())["paths"][0]["ratio_to_floor"] == 0.5
