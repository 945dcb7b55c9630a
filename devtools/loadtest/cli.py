"""``tally load-test``: its arguments, and the clear error when the extra is missing."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from services.kit.addresses import service_address
from services.kit.settings import SERVICE_NAMES

RESULTS = Path("bench/results")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "load-test",
        help="drive a running suite (make run) through ingestion, close and invoicing; report",
        description="Ingest --days of usage for one subscription in --usage-jobs jobs on"
        " --concurrency workers through RecordUsageBatch, close its period and wait for the"
        " finalized invoice; write a JSON report, a Markdown summary and PNG plots under"
        " bench/results/. Addresses: <SERVICE>_ADDR (default the README ports); backlogs"
        " need DATABASE_URL and NATS_URL (printed by `tally dev up`).",
    )
    parser.add_argument("--org", required=True, help="the subscription's organisation")
    parser.add_argument("--subscription", required=True, help="subscription id")
    parser.add_argument("--days", type=int, default=3, help="days of usage to generate")
    parser.add_argument("--usage-jobs", type=int, default=25, help="jobs the usage is cut into")
    parser.add_argument("--concurrency", type=int, default=5, help="workers running the jobs")
    parser.add_argument("--metric", default="api_calls", help="metric code (default api_calls)")
    parser.add_argument("--events-per-day", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000, help="events per call (<=1000)")
    parser.add_argument(
        "--no-close", action="store_true", help="skip the period close and invoicing"
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="report directory")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
        import tqdm  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        print(
            f"tally: error: load-test needs the optional extra 'loadtest' ({exc.name} is"
            " missing): pip install -e '.[loadtest]' (make installs it)",
            file=sys.stderr,
        )
        return 1
    for name, value, low, high in (
        ("--days", args.days, 1, 366),
        ("--usage-jobs", args.usage_jobs, 1, 1_000_000),
        ("--concurrency", args.concurrency, 1, 1000),
        ("--batch-size", args.batch_size, 1, 1000),
        ("--events-per-day", args.events_per_day, 1, 100_000_000),
    ):
        if not low <= value <= high:
            print(f"tally: error: {name} must be {low}..{high}, got {value}", file=sys.stderr)
            return 2
    from devtools.loadtest.run import LoadTestConfig, run

    addresses = {s: service_address(s) for s in SERVICE_NAMES}
    config = LoadTestConfig(
        org_id=args.org,
        subscription_id=args.subscription,
        days=args.days,
        usage_jobs=args.usage_jobs,
        concurrency=args.concurrency,
        metric_code=args.metric,
        events_per_day=args.events_per_day,
        batch_size=args.batch_size,
        close=not args.no_close,
        addresses=addresses,
        database_url=args.database_url,
        nats_url=args.nats_url,
        out=args.out,
    )
    import grpc

    from services.kit.devstack.interrupts import Interrupted

    try:
        report, json_path, md_path = run(config)
    except grpc.aio.AioRpcError as err:
        print(f"tally: error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except Interrupted as interrupted:
        print(f"tally load-test: interrupted by {interrupted}; no report written", file=sys.stderr)
        return interrupted.exit_status
    print(md_path.read_text())
    print(f"written: {json_path} and {md_path}")
    return 0 if report.accepted + report.duplicates == report.events_sent else 1
