"""Client channels between services."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

# Calls spread over every address a target resolves to (the pods behind a
# headless Service, or "ipv4:a,b" for replicas on one machine). gRPC's
# default, pick_first, sends every call down one connection to one replica.
ROUND_ROBIN: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}


def round_robin_options() -> list[tuple[str, Any]]:
    return [("grpc.service_config", json.dumps(ROUND_ROBIN))]


def replicas_target(addresses: Sequence[str]) -> str:
    """One channel target over several ``ip:port`` replicas (IPv4 literals)."""
    if len(addresses) == 1:
        return addresses[0]
    return "ipv4:" + ",".join(addresses)


def traced_channel(address: str, **options: Any) -> grpc.aio.Channel:
    """An insecure channel whose calls continue the caller's trace in the callee."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return grpc.aio.insecure_channel(
        address,
        interceptors=aio_client_interceptors(),  # type: ignore[no-untyped-call]
        **options,
    )
