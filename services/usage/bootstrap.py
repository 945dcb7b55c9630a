"""Composition root of the usage service: the one place that wires it."""

from __future__ import annotations

from services.kit.runtime import ServiceSpec
from services.usage import grpc_api, repository

SPEC = ServiceSpec(name="usage", metadata=repository.metadata, register=grpc_api.register)
