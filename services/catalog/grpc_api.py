"""gRPC adapter of the catalog service.

Every RPC still answers UNIMPLEMENTED (the generated base class does that);
the catalog issue replaces each method with proto -> command -> handler -> proto.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tally.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext


class CatalogApi(catalog_pb2_grpc.CatalogServiceServicer):  # type: ignore[misc]
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    return [add_servicer(server, CatalogApi(ctx), catalog_pb2, catalog_pb2_grpc, "CatalogService")]
