"""The client side of usage metering, for product code.

``UsageEmitter`` (async), ``SyncUsageEmitter`` (threads), and middleware
(``UsageMeteringMiddleware`` for ASGI, ``UsageMeteringInterceptor`` for gRPC
servers) that meter each handled request; ``verify_signature`` checks
Tally's outbound webhooks.
"""

from services.usage.emitter.client import EmitterConfig, EmitterStats, UsageEmitter
from services.usage.emitter.middleware import (
    UsageMeteringInterceptor,
    UsageMeteringMiddleware,
    org_from_header,
    org_from_metadata,
)
from services.usage.emitter.sync import SyncUsageEmitter
from services.usage.emitter.webhooks import WebhookSignatureError, verify_signature

__all__ = [
    "EmitterConfig",
    "EmitterStats",
    "SyncUsageEmitter",
    "UsageEmitter",
    "UsageMeteringInterceptor",
    "UsageMeteringMiddleware",
    "WebhookSignatureError",
    "org_from_header",
    "org_from_metadata",
    "verify_signature",
]
