"""`tally invoicing run`: RunBilling over gRPC (INVOICING_ADDR, default 127.0.0.1:50054)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

DEFAULT_ADDR = "127.0.0.1:50054"


def instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 instant") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a timezone (Z or +00:00)")
    return value.astimezone(UTC)


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end like every other CLI failure of the suite: one
    ``tally: error: ...`` line and exit status 1 (argparse would print the
    usage and exit 2), so scripts need to handle only one failure shape."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # Leftovers would reach the top-level `tally` parser, which reports
        # them its own way (usage, exit 2): refuse them here instead.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        print(f"tally: error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(1)


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    inv = commands.add_parser("invoicing", help="invoicing operations (INVOICING_ADDR)")
    sub = inv.add_subparsers(
        dest="invoicing_command",
        required=True,
        metavar="INVOICING_COMMAND",
        parser_class=OneLineParser,
    )
    run = sub.add_parser("run", help="invoice one subscription period now (RunBilling)")
    run.add_argument("--org", required=True, help="organisation id")
    run.add_argument("--subscription", required=True, help="subscription id")
    run.add_argument("--period-start", type=instant, required=True, help="ISO 8601 instant")
    run.add_argument("--address", help="invoicing host:port (default INVOICING_ADDR)")
    run.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    run.set_defaults(func=run_billing)


def run_billing(args: argparse.Namespace) -> int:
    import uuid

    import grpc
    from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc

    from services.kit.protoconv import to_timestamp

    address = args.address or os.environ.get("INVOICING_ADDR", DEFAULT_ADDR)
    request = invoicing_pb2.RunBillingRequest(
        org_id=args.org,
        subscription_id=args.subscription,
        period_start_time=to_timestamp(args.period_start),
        request_id=str(uuid.uuid4()),
    )
    with grpc.insecure_channel(address) as channel:
        try:
            reply = invoicing_pb2_grpc.InvoicingServiceStub(channel).RunBilling(
                request, timeout=args.timeout
            )
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            print(f"tally: error: run at {address} failed: {code}: {detail}", file=sys.stderr)
            return 1
    inv = reply.invoice
    print(
        f"{'created' if reply.created else 'exists'} {inv.invoice_id} {inv.number or '(draft)'}"
        f" total {inv.total.amount_minor} {inv.currency_code}"
    )
    return 0
