"""Client channels between services."""

from __future__ import annotations

from typing import Any

import grpc


def traced_channel(address: str, **options: Any) -> grpc.aio.Channel:
    """An insecure channel whose calls continue the caller's trace in the callee."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return grpc.aio.insecure_channel(
        address,
        interceptors=aio_client_interceptors(),  # type: ignore[no-untyped-call]
        **options,
    )
