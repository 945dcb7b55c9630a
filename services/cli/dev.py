"""``tally dev up``: the whole suite on this machine, no Docker.

Runs in the foreground; Ctrl-C or SIGTERM stops every process it started,
PostgreSQL and NATS included. A second run reuses the data in ``--data-dir``.
"""

from __future__ import annotations

import time
from pathlib import Path

from services.cli.seed import seed
from services.kit.devstack.interrupts import Interrupted
from services.kit.devstack.suite import Suite
from services.kit.settings import SERVICE_NAMES


def _banner(suite: Suite, demo: str) -> str:
    rows = [
        ("gateway", suite.gateway_url, "HTTP: /healthz, /docs, /openapi.json"),
        ("console", suite.console_url, "billing pages in a browser: /sign-in"),
        *((s, suite.service_address(s), "gRPC (health, reflection)") for s in SERVICE_NAMES),
        ("postgres", suite.database_url, "one schema per service"),
        ("nats", suite.nats.url, "JetStream"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = ["", "Tally is up:"]
    lines += [f"  {name:<{width}}  {where:<46} {what}" for name, where, what in rows]
    lines += [
        "",
        f"  logs: {suite.log_dir}/<process>.log",
        f"  features: {suite.gateway_url}/portal/billing/v1/features (what an org sees; a"
        " portal token: tally dev token --org org_demo --permission organization:billing)",
        f"  demo data: {demo}",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def dev_up(data_dir: str) -> int:
    """Start, seed and serve until a signal; exit 128 + the signal (130 for Ctrl-C).

    The first SIGINT or SIGTERM, whatever the launcher is doing (starting
    PostgreSQL, migrating, seeding, serving), stops everything it started;
    a second one kills everything at once (``Interrupts``). An interrupted
    seed is finished by the next run: its request ids and idempotency keys
    make the replay add nothing twice.
    """
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    demo_env = {
        # Stripe's own default: a closed period's invoice stays a draft for an
        # hour, so the demo shows drafts beside finalized, paid, void and
        # written-off ones.
        "INVOICING_GRACE_PERIOD_SECONDS": "3600",
        # The seed closes its three months of history itself, month by month;
        # the service's own clock must not overtake it with today's date first.
        "SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS": "300",
    }
    suite = Suite(path, extra_env=demo_env)

    def step(what: str) -> None:
        print(f"  {what}", flush=True)

    print(f"starting Tally from {suite.data_dir} ...", flush=True)
    try:
        with suite.started(progress=step) as interrupts:
            step("seeding demo data ...")
            addresses = {s: suite.service_address(s) for s in SERVICE_NAMES}
            seeded = interrupts.run(seed(addresses))
            print(_banner(suite, seeded.describe()), flush=True)
            while True:
                suite.raise_if_exited()
                time.sleep(0.5)
    except Interrupted as interrupted:
        return interrupted.exit_status
