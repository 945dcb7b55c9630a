"""CPU and memory of the suite's processes, sampled from a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil


@dataclass
class ProcessSample:
    at: float  # seconds since the sampler started
    cpu_percent: float  # of one core; 200 = both cores of this machine
    rss_bytes: int


def _tree_rss_and_cpu(proc: psutil.Process, children: bool) -> tuple[int, float]:
    members = [proc, *(proc.children(recursive=True) if children else [])]
    rss = 0
    cpu = 0.0
    for member in members:
        try:
            with member.oneshot():
                rss += member.memory_info().rss
                times = member.cpu_times()
                cpu += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss, cpu


@dataclass
class ProcessSampler:
    """Samples RSS and CPU of named pids every ``interval`` seconds.

    A name whose process forks workers (PostgreSQL) is measured with its whole
    tree: its backends are where its memory and CPU go. The peak is the
    highest sampled RSS, so a spike shorter than the interval can be missed.
    """

    pids: Mapping[str, int]
    trees: frozenset[str] = frozenset()
    interval: float = 0.5
    samples: dict[str, list[ProcessSample]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_cpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    on_sample: Callable[[float], None] | None = None

    def start(self) -> ProcessSampler:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval)

    def sample_once(self) -> None:
        now = time.monotonic()
        for name, pid in self.pids.items():
            try:
                proc = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
            rss, cpu_seconds = _tree_rss_and_cpu(proc, name in self.trees)
            previous = self._last_cpu.get(name)
            self._last_cpu[name] = (now, cpu_seconds)
            percent = 0.0
            if previous is not None and now > previous[0]:
                percent = 100 * (cpu_seconds - previous[1]) / (now - previous[0])
            self.samples.setdefault(name, []).append(
                ProcessSample(now - self._t0, max(percent, 0.0), rss)
            )
        if self.on_sample is not None:
            self.on_sample(now - self._t0)

    def peak_rss(self) -> dict[str, int]:
        return {name: max(s.rss_bytes for s in rows) for name, rows in self.samples.items() if rows}

    def mean_cpu(self) -> dict[str, float]:
        return {
            name: sum(s.cpu_percent for s in rows[1:]) / max(1, len(rows) - 1)
            for name, rows in self.samples.items()
            if rows
        }
