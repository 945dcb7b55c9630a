"""Adding a generated servicer to a server, named by its proto service."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import grpc


def add_servicer(
    server: grpc.aio.Server, servicer: Any, pb2: ModuleType, pb2_grpc: ModuleType, service: str
) -> str:
    """Register ``servicer`` for ``service`` and return its full name (for health/reflection)."""
    getattr(pb2_grpc, f"add_{service}Servicer_to_server")(servicer, server)
    full_name: str = pb2.DESCRIPTOR.services_by_name[service].full_name
    return full_name
