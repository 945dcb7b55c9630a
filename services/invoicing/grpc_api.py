"""gRPC adapter of the invoicing service.

Every RPC still answers UNIMPLEMENTED (the generated base class does that);
the invoicing issue replaces each method with proto -> command -> handler -> proto.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc

from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext


class InvoicingApi(invoicing_pb2_grpc.InvoicingServiceServicer):  # type: ignore[misc]
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    return [
        add_servicer(
            server, InvoicingApi(ctx), invoicing_pb2, invoicing_pb2_grpc, "InvoicingService"
        )
    ]
