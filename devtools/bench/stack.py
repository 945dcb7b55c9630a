"""The embedded suite as the bench runs it: fresh data, durable PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.bench.procs import ProcessSampler
from services.kit.devstack.interrupts import Interrupts
from services.kit.devstack.suite import Suite, SuitePorts

# What the bench changes from `make run`, each because it would distort a figure:
BENCH_ENV = {
    # The billing run is driven by an explicit ClosePeriods; the service's own
    # wall-clock loop must not close (or race to close) periods meanwhile.
    "SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS": "0",
    # The gateway's per-subject limits (600/minute) would cap the HTTP figure
    # at 10 batches a second: the bench measures the service, not the limiter.
    "GATEWAY_RATE_LIMIT_PER_SUBJECT": "1000000/second",
    "GATEWAY_RATE_LIMIT_PER_ORG": "1000000/second",
    # Each dialect figure sends one call per org (500 of the 2,000 orgs at the
    # default size): with the 10 s key cache, keys warmed before the clock
    # would expire inside it and the figure would count one VerifyApiKey per
    # call, which a steady producer pays once per 10 s, not per batch.
    "GATEWAY_API_KEY_CACHE_SECONDS": "600",
}


@contextmanager
def running_suite(
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    api_replicas: dict[str, int] | None = None,
) -> Iterator[tuple[Suite, Interrupts]]:
    """Start a fresh suite on free ports (durable PostgreSQL: fsync on); stop and clean up.

    Ctrl-C or SIGTERM stops it at any moment (``Suite.started``): run the
    bench's coroutines through the yielded ``Interrupts.run``.
    """
    owned = data_dir is None
    path = Path(tempfile.mkdtemp(prefix="tally-bench-")) if data_dir is None else data_dir
    ports = SuitePorts.free()
    # Suite.env() points the gateway at each service but not invoicing at
    # usage; on free ports its 127.0.0.1:50053 default would miss.
    wiring = {"INVOICING_USAGE_ADDR": f"127.0.0.1:{ports.services['usage']}"}
    suite = Suite(
        path,
        ports=ports,
        durable=True,
        extra_env={**BENCH_ENV, **wiring, **(extra_env or {})},
        api_replicas=dict(api_replicas or {}),
    )
    try:
        with suite.started(timeout=120) as interrupts:
            yield suite, interrupts
    finally:
        if owned:
            shutil.rmtree(path, ignore_errors=True)


def sampler_for(suite: Suite, interval: float = 0.5) -> ProcessSampler:
    """A sampler over every suite process; PostgreSQL counted with its backends."""
    pids = {name: proc.pid for name, proc in suite.processes.items()}
    if suite.postgres.pid is not None:
        pids["postgres"] = suite.postgres.pid
    if suite.nats.pid is not None:
        pids["nats"] = suite.nats.pid
    return ProcessSampler(pids, trees=frozenset({"postgres"}), interval=interval)
