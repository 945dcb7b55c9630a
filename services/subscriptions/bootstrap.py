"""Composition root of the subscriptions service: the one place that wires it."""

from __future__ import annotations

from services.kit.runtime import ServiceSpec
from services.subscriptions import grpc_api, repository

SPEC = ServiceSpec(name="subscriptions", metadata=repository.metadata, register=grpc_api.register)
