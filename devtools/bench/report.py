"""What one bench run measured, and the table it prints."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The targets; shown beside each figure, never asserted.
TARGET_GRPC_EPS = 50_000
TARGET_FLOOR_SHARE = 0.40
TARGET_HTTP_EPS = 20_000
TARGET_ENTITLEMENT_P99_MS = 5.0
TARGET_BILLING_SECONDS = 60.0
TARGET_BILLING_SUBSCRIPTIONS = 10_000


@dataclass
class PathFigure:
    path: str
    events: int
    accepted: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def events_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BenchReport:
    machine: dict[str, str]
    floor_events: int
    floor_seconds: float
    paths: list[PathFigure] = field(default_factory=list)
    entitlement: dict[str, float] = field(default_factory=dict)
    preview: dict[str, float] = field(default_factory=dict)
    billing: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    mean_cpu_percent: dict[str, float] = field(default_factory=dict)

    @property
    def floor_eps(self) -> float:
        return self.floor_events / self.floor_seconds if self.floor_seconds > 0 else 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data["floor_events_per_second"] = self.floor_eps
        for figure, row in zip(self.paths, data["paths"], strict=True):
            row["events_per_second"] = figure.events_per_second
            row["ratio_to_floor"] = self.ratio(figure)
        return json.dumps(data, indent=2, sort_keys=True, default=str)

    def ratio(self, figure: PathFigure) -> float:
        return figure.events_per_second / self.floor_eps if self.floor_eps else math.nan


def _num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def rows(report: BenchReport) -> list[tuple[str, str, str, str]]:
    """(what, figure, ratio to the floor, target and whether it was met)."""
    out: list[tuple[str, str, str, str]] = [
        (
            f"floor: asyncpg COPY into a twin table ({report.floor_events:,} rows)",
            f"{_num(report.floor_eps)} ev/s",
            "1.00",
            "",
        )
    ]
    for p in report.paths:
        ratio = report.ratio(p)
        target = ""
        if p.path in ("StreamUsage", "RecordUsageBatch"):
            ok = p.events_per_second >= TARGET_GRPC_EPS and ratio >= TARGET_FLOOR_SHARE
            target = (
                f">= {TARGET_GRPC_EPS:,} ev/s and >= {TARGET_FLOOR_SHARE:.0%} of floor: {_mark(ok)}"
            )
        elif p.path.startswith("HTTP"):
            ok = p.events_per_second >= TARGET_HTTP_EPS
            target = f">= {TARGET_HTTP_EPS:,} ev/s: {_mark(ok)}"
        out.append(
            (
                f"{p.path} ({p.accepted:,} events; call p50 {_num(p.p50_ms, 1)} ms,"
                f" p99 {_num(p.p99_ms, 1)} ms)",
                f"{_num(p.events_per_second)} ev/s",
                f"{ratio:.2f}",
                target,
            )
        )
    e = report.entitlement
    if e:
        ok = e["p99_ms"] < TARGET_ENTITLEMENT_P99_MS
        out.append(
            (
                f"CheckEntitlement at {_num(e['rate'])} req/s"
                f" ({_num(e['count'])} calls, {_num(e.get('errors', 0))} errors)",
                f"p50 {_num(e['p50_ms'], 2)} ms, p99 {_num(e['p99_ms'], 2)} ms",
                "",
                f"p99 < {TARGET_ENTITLEMENT_P99_MS:g} ms at 1,000 req/s: {_mark(ok)}",
            )
        )
    v = report.preview
    if v:
        out.append(
            (
                f"PreviewInvoice ({_num(v['count'])} calls, {_num(v['concurrency'])} in flight)",
                f"p50 {_num(v['p50_ms'], 1)} ms, p99 {_num(v['p99_ms'], 1)} ms",
                "",
                "",
            )
        )
    b = report.billing
    if b:
        n = int(b["subscriptions"])
        scaled = b["total_seconds"] * TARGET_BILLING_SUBSCRIPTIONS / n if n else math.nan
        label = f"billing run: close + finalize {n:,} subscriptions"
        target = f"{TARGET_BILLING_SUBSCRIPTIONS:,} in < {TARGET_BILLING_SECONDS:g} s"
        if n != TARGET_BILLING_SUBSCRIPTIONS:
            label += f" (scaled to 10,000: {_num(scaled, 1)} s)"
            target += f" (linear estimate): {_mark(scaled < TARGET_BILLING_SECONDS)}"
        else:
            target += f": {_mark(b['total_seconds'] < TARGET_BILLING_SECONDS)}"
        out.append(
            (
                label,
                f"{_num(b['total_seconds'], 1)} s (close {_num(b['close_seconds'], 1)} s)",
                "",
                target,
            )
        )
    for name, peak in sorted(report.peak_rss_bytes.items()):
        cpu = report.mean_cpu_percent.get(name, math.nan)
        out.append((f"peak RSS {name}", f"{peak / 2**20:,.0f} MiB", "", f"mean CPU {_num(cpu)}%"))
    return out


def format_table(report: BenchReport) -> str:
    """A Markdown table (readable as plain text too)."""
    header = ("measure", "figure", "x floor", "target")
    body = rows(report)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]

    def line(cells: tuple[str, str, str, str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    machine = ", ".join(f"{k}: {v}" for k, v in report.machine.items())
    return "\n".join(
        [
            f"Machine: {machine}",
            "",
            line(header),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(r) for r in body),
        ]
    )


def write(report: BenchReport, directory: Path, stamp: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"bench-{stamp}.json"
    md_path = directory / f"bench-{stamp}.md"
    json_path.write_text(report.to_json() + "\n")
    md_path.write_text(f"# make bench, {stamp}\n\n{format_table(report)}\n")
    (directory / "bench-latest.md").write_text(md_path.read_text())
    return json_path, md_path
