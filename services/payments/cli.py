"""`tally payments sync`: SyncPayments over gRPC (PAYMENTS_ADDR, default 127.0.0.1:50055)."""

from __future__ import annotations

import argparse
import sys

from services.kit.addresses import service_address
from services.kit.cliargs import OneLineParser, instant


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pay = commands.add_parser("payments", help="payments operations (PAYMENTS_ADDR)")
    sub = pay.add_subparsers(
        dest="payments_command",
        required=True,
        metavar="PAYMENTS_COMMAND",
        parser_class=OneLineParser,
    )
    sync = sub.add_parser("sync", help="reconcile payments with the provider now (SyncPayments)")
    sync.add_argument(
        "--since", type=instant, help="ISO 8601 instant (default: since the last sync)"
    )
    sync.add_argument("--address", help="payments host:port (default PAYMENTS_ADDR)")
    sync.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    sync.set_defaults(func=sync_payments)


def sync_payments(args: argparse.Namespace) -> int:
    import uuid

    import grpc
    from tally.payments.v1 import payments_pb2, payments_pb2_grpc

    from services.kit.protoconv import to_timestamp
    from services.kit.rpc.actor import cli_channel

    address = service_address("payments", args.address)
    request = payments_pb2.SyncPaymentsRequest(
        request_id=str(uuid.uuid4()), since_time=to_timestamp(args.since)
    )
    with cli_channel(address) as channel:
        try:
            reply = payments_pb2_grpc.PaymentsServiceStub(channel).SyncPayments(
                request, timeout=args.timeout
            )
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            print(f"tally: error: sync at {address} failed: {code}: {detail}", file=sys.stderr)
            return 1
    until = reply.synced_until_time.ToDatetime().isoformat() + "Z"
    print(
        f"checked {reply.checked_count}, updated {reply.updated_count}"
        f" ({len(reply.updated_payment_ids)} payments), synced until {until}"
    )
    for payment_id in reply.updated_payment_ids:
        print(f"  {payment_id}")
    return 0
