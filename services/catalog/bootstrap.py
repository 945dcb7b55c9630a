"""Composition root of the catalog service: the one place that wires it."""

from __future__ import annotations

from services.catalog import grpc_api, repository
from services.kit.runtime import ServiceSpec

SPEC = ServiceSpec(
    name="catalog",
    metadata=repository.metadata,
    register=grpc_api.register,
    uow_factory=grpc_api.uow_factory,
)
