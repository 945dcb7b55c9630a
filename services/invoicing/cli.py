"""`tally invoicing run`: RunBilling over gRPC (INVOICING_ADDR, default 127.0.0.1:50054)."""

from __future__ import annotations

import argparse
import sys

from services.kit.addresses import service_address
from services.kit.cliargs import OneLineParser, instant


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
    from services.kit.rpc.actor import cli_channel

    address = service_address("invoicing", args.address)
    request = invoicing_pb2.RunBillingRequest(
        org_id=args.org,
        subscription_id=args.subscription,
        period_start_time=to_timestamp(args.period_start),
        request_id=str(uuid.uuid4()),
    )
    with cli_channel(address) as channel:
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
