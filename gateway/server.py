"""Serve the gateway with uvicorn; the same entry point compose runs."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from services.kit.devstack.ports import ensure_port_free
from services.kit.settings import GatewaySettings, load_settings
from services.kit.telemetry import configure_logging, configure_metrics, configure_tracing


def serve() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level, settings.log_format)
    configure_tracing("gateway", settings.otel_exporter_otlp_endpoint)
    configure_metrics("gateway", settings.otel_exporter_otlp_endpoint)
    ensure_port_free(settings.http_port, settings.http_host, what="gateway")
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        # uvloop and httptools: the batch route's CPU is mostly parsing and the loop.
        loop=settings.event_loop,
        http="httptools",
    )
