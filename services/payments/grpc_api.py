"""gRPC adapter of the payments service.

Every RPC still answers UNIMPLEMENTED (the generated base class does that);
the payments issue replaces each method with proto -> command -> handler -> proto.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tally.payments.v1 import payments_pb2, payments_pb2_grpc

from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext


class PaymentsApi(payments_pb2_grpc.PaymentsServiceServicer):  # type: ignore[misc]
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    return [
        add_servicer(server, PaymentsApi(ctx), payments_pb2, payments_pb2_grpc, "PaymentsService")
    ]
