"""Composition root of the invoicing service: the one place that wires it."""

from __future__ import annotations

from services.invoicing import grpc_api, repository
from services.kit.runtime import ServiceSpec

SPEC = ServiceSpec(name="invoicing", metadata=repository.metadata, register=grpc_api.register)
