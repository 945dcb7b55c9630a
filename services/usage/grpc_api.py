"""gRPC adapter of the usage service.

Every RPC still answers UNIMPLEMENTED (the generated base class does that);
the usage issue replaces each method with proto -> command -> handler -> proto.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext


class UsageApi(usage_pb2_grpc.UsageServiceServicer):  # type: ignore[misc]
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    return [add_servicer(server, UsageApi(ctx), usage_pb2, usage_pb2_grpc, "UsageService")]
