"""The load test's report: JSON (every sample), a Markdown summary and PNG plots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.bench.procs import ProcessSample
from devtools.bench.stats import latency_summary
from devtools.loadtest.backlog import BacklogSeries


@dataclass
class LoadTestReport:
    config: dict[str, Any]
    started_at: str
    events_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    ingest_seconds: float = 0.0
    # (seconds since start, events accepted so far): throughput over time.
    progress: list[tuple[float, int]] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # seconds, per RPC
    billing: dict[str, Any] = field(default_factory=dict)
    backlog: BacklogSeries = field(default_factory=BacklogSeries)
    processes: dict[str, list[ProcessSample]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, rpc: str, seconds: float) -> None:
        self.latencies.setdefault(rpc, []).append(seconds)

    @property
    def throughput(self) -> float:
        """Events accepted per second, end to end (an accepted event is durable)."""
        return self.accepted / self.ingest_seconds if self.ingest_seconds > 0 else 0.0

    def summaries(self) -> dict[str, dict[str, float]]:
        return {rpc: latency_summary(values) for rpc, values in sorted(self.latencies.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "started_at": self.started_at,
            "ingestion": {
                "events_sent": self.events_sent,
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "rejected": self.rejected,
                "seconds": self.ingest_seconds,
                "events_per_second": self.throughput,
                "progress": self.progress,
            },
            "latency_ms": self.summaries(),
            "billing": self.billing,
            "outbox_backlog": self.backlog.outbox,
            "consumer_pending": self.backlog.pending,
            "processes": {
                name: {
                    "peak_rss_bytes": max((s.rss_bytes for s in samples), default=0),
                    "samples": [[s.at, s.cpu_percent, s.rss_bytes] for s in samples],
                }
                for name, samples in sorted(self.processes.items())
            },
            "notes": [*self.notes, *self.backlog.notes],
        }

    def markdown(self, plots: list[Path]) -> str:
        lines = [
            f"# Load test, {self.started_at}",
            "",
            "| setting | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in self.config.items()),
            "",
            "## Ingestion",
            "",
            f"{self.events_sent:,} events sent: {self.accepted:,} accepted,"
            f" {self.duplicates:,} duplicates, {self.rejected:,} rejected in"
            f" {self.ingest_seconds:.1f} s: **{self.throughput:,.0f} events/s** accepted end"
            " to end.",
            "",
            "## Latency per RPC",
            "",
            "| RPC | calls | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for rpc, s in self.summaries().items():
            lines.append(
                f"| {rpc} | {int(s['count']):,} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f}"
                f" | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |"
            )
        if self.billing:
            lines += ["", "## Period close and invoicing", ""]
            lines += [f"- {k}: {v}" for k, v in self.billing.items()]
        lines += ["", "## Backlogs", ""]
        lines += [
            f"- outbox {name}: peak {max(v for _, v in points):,}, last {points[-1][1]:,}"
            for name, points in sorted(self.backlog.outbox.items())
            if points
        ]
        lines += [
            f"- consumer {name}: peak {max(v for _, v in points):,}, last {points[-1][1]:,}"
            for name, points in sorted(self.backlog.pending.items())
            if points
        ]
        lines += [
            "",
            "## Processes",
            "",
            "| process | peak RSS MiB | mean CPU % |",
            "|---|---:|---:|",
        ]
        for name, samples in sorted(self.processes.items()):
            if not samples:
                continue
            peak = max(s.rss_bytes for s in samples) / 2**20
            cpu = sum(s.cpu_percent for s in samples[1:]) / max(1, len(samples) - 1)
            lines.append(f"| {name} | {peak:,.0f} | {cpu:.0f} |")
        notes = [*self.notes, *self.backlog.notes]
        if notes:
            lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
        if plots:
            lines += ["", "## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots)]
        return "\n".join(lines) + "\n"


def plot(report: LoadTestReport, directory: Path, stem: str) -> list[Path]:
    """Throughput, backlogs and per-process CPU/RSS over time, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = directory / f"{stem}-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    if report.progress:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        times = [t for t, _ in report.progress]
        done = [n for _, n in report.progress]
        rates = [0.0] + [
            (done[i] - done[i - 1]) / (times[i] - times[i - 1]) if times[i] > times[i - 1] else 0.0
            for i in range(1, len(done))
        ]
        ax.plot(times, rates, label="events/s")
        ax.set_xlabel("s")
        ax.set_ylabel("accepted events/s")
        ax.set_title("Ingestion throughput")
        save(fig, "throughput")
    for title, series, name in (
        ("Outbox backlog (unpublished events)", report.backlog.outbox, "outbox"),
        ("Consumer pending (undelivered + unacked)", report.backlog.pending, "consumers"),
    ):
        if any(series.values()):
            fig, ax = plt.subplots(figsize=(8, 3.5))
            for label, points in sorted(series.items()):
                ax.plot([t for t, _ in points], [v for _, v in points], label=label)
            ax.set_xlabel("s")
            ax.set_title(title)
            ax.legend(fontsize="x-small", loc="upper right")
            save(fig, name)
    if report.processes:
        fig, (cpu_ax, rss_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        for label, samples in sorted(report.processes.items()):
            cpu_ax.plot([s.at for s in samples], [s.cpu_percent for s in samples], label=label)
            rss_ax.plot([s.at for s in samples], [s.rss_bytes / 2**20 for s in samples])
        cpu_ax.set_ylabel("CPU % of a core")
        rss_ax.set_ylabel("RSS MiB")
        rss_ax.set_xlabel("s")
        cpu_ax.legend(fontsize="x-small", loc="upper right")
        cpu_ax.set_title("Processes")
        save(fig, "processes")
    return paths


def write(report: LoadTestReport, directory: Path, stem: str) -> tuple[Path, Path]:
    """``<stem>.json``, ``<stem>.md`` and the plots; returns (json, markdown)."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = plot(report, directory, stem)
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    md_path.write_text(report.markdown(plots))
    return json_path, md_path
