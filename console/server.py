"""Serve the console with uvicorn: ``tally serve console`` (also what compose runs)."""

from __future__ import annotations

import uvicorn

from console.app import create_app
from console.settings import ConsoleSettings
from services.kit.devstack.ports import ensure_port_free
from services.kit.settings import load_settings
from services.kit.telemetry import configure_logging


def serve() -> None:
    settings = load_settings(ConsoleSettings)
    configure_logging("console", settings.log_level, settings.log_format)
    ensure_port_free(settings.http_port, settings.http_host, what="console")
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        loop=settings.event_loop,
    )
