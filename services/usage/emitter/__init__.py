"""The client side of usage metering, for product code.

``UsageEmitter`` (async), ``SyncUsageEmitter`` (threads), and middleware
(``UsageMeteringMiddleware`` for ASGI, ``UsageMeteringInterceptor`` for gRPC
servers) that meter each handled request.
"""

from services.usage.emitter.client import EmitterConfig, EmitterStats, UsageEmitter
from services.usage.emitter.middleware import (
    UsageMeteringInterceptor,
    UsageMeteringMiddleware,
    org_from_header,
    org_from_metadata,
)
from services.usage.emitter.sync import SyncUsageEmitter

__all__ = [
    "EmitterConfig",
    "EmitterStats",
    "SyncUsageEmitter",
    "UsageEmitter",
    "UsageMeteringInterceptor",
    "UsageMeteringMiddleware",
    "org_from_header",
    "org_from_metadata",
]
