"""``tally verify``: print what is off across the services' data; exit 1 if anything is.

Reads ``DATABASE_URL`` (a read replica, or the primary with a read-only role:
the checks run in a READ ONLY transaction) and asks the payments service at
``PAYMENTS_ADDR`` for its payments. Exit 0 clean, 1 findings, 2 could not check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from services.kit.addresses import service_address
from services.kit.settings import SERVICE_NAMES

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/tally"
EXIT_FINDINGS = 1
EXIT_CANNOT_CHECK = 2


def _schema(text: str) -> tuple[str, str]:
    service, sep, schema = text.partition("=")
    if not sep or service not in SERVICE_NAMES or not schema:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SERVICE=SCHEMA with SERVICE one of {', '.join(SERVICE_NAMES)}"
        )
    return service, schema


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "verify",
        help="check the ledger's invariants on a running deployment (read-only)",
        description=__doc__,
    )
    p.add_argument(
        "--database-url",
        help="read replica or read-only role on the primary (default VERIFY_DATABASE_URL,"
        " then DATABASE_URL)",
    )
    p.add_argument("--payments-addr", help="payments host:port (default PAYMENTS_ADDR)")
    p.add_argument("--no-payments", action="store_true", help="skip the payment checks")
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=60.0,
        help="work younger than this is in flight, not missing (default 60)",
    )
    p.add_argument(
        "--schema",
        type=_schema,
        action="append",
        default=[],
        metavar="SERVICE=SCHEMA",
        help="a service's schema when DB_SCHEMA renamed it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from services.verify.run import verify

    database_url = (
        args.database_url
        or os.environ.get("VERIFY_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )
    payments_addr = None
    if not args.no_payments:
        payments_addr = service_address("payments", args.payments_addr)
    schemas = {s: s for s in SERVICE_NAMES} | dict(args.schema)
    try:
        report = asyncio.run(
            verify(
                database_url,
                payments_addr=payments_addr,
                schemas=schemas,
                settle_seconds=args.settle_seconds,
            )
        )
    except (TimeoutError, OSError) as exc:
        print(f"tally: error: verify cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    except Exception as exc:
        line = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        print(f"tally: error: verify failed: {line}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    print(report.render())
    return 0 if report.clean else EXIT_FINDINGS
