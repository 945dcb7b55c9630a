"""Composition root of the payments service: the one place that wires it."""

from __future__ import annotations

from services.kit.runtime import ServiceSpec
from services.payments import grpc_api, repository

SPEC = ServiceSpec(name="payments", metadata=repository.metadata, register=grpc_api.register)
