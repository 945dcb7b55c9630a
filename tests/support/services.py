"""Running services in-process for integration tests."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.kit.devstack import free_ports
from services.kit.runtime import ServiceRuntime
from services.kit.settings import settings_class_for


@asynccontextmanager
async def service_in_process(
    service: str, database_url: str, nats_url: str, **overrides: object
) -> AsyncIterator[ServiceRuntime]:
    """Start ``service`` exactly as ``tally serve`` would, on a free port."""
    grpc_port, http_port = free_ports(2)
    settings = settings_class_for(service)(
        database_url=database_url,
        nats_url=nats_url,
        **{"grpc_port": grpc_port, "http_port": http_port, **overrides},
    )
    spec = importlib.import_module(f"services.{service}.bootstrap").SPEC
    runtime = ServiceRuntime(spec, settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop(grace=1)
