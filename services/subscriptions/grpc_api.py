"""gRPC adapter of the subscriptions service.

Every RPC still answers UNIMPLEMENTED (the generated base class does that);
the subscriptions issue replaces each method with proto -> command -> handler -> proto.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext


class SubscriptionsApi(subscriptions_pb2_grpc.SubscriptionsServiceServicer):  # type: ignore[misc]
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    return [
        add_servicer(
            server,
            SubscriptionsApi(ctx),
            subscriptions_pb2,
            subscriptions_pb2_grpc,
            "SubscriptionsService",
        )
    ]
