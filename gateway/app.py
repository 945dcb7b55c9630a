"""The HTTP gateway: health and API docs now; transcoding arrives with issue 6/9."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from gateway import health
from gateway.openapi import openapi_document
from services.kit.settings import GatewaySettings

_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Tally billing API</title>
<style>body{font:15px system-ui;margin:2rem;max-width:70rem}code{background:#eee;padding:0 .3em}
td{padding:.2em .8em;vertical-align:top}</style></head>
<body><h1>Tally billing API</h1>
<p>Machine-readable: <a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI 3.1).</p>
<table id="ops"></table>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const rows = [];
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [verb, op] of Object.entries(ops))
      rows.push(`<tr><td><code>${verb.toUpperCase()}</code></td><td><code>${path}</code></td>`
              + `<td>${op.operationId}</td></tr>`);
  document.getElementById('ops').innerHTML = rows.join('');
});
</script></body></html>"""


def create_app(settings: GatewaySettings) -> Starlette:
    channels: dict[str, grpc.aio.Channel] = {}
    openapi: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One channel per service for the life of the process: channels are
        # expensive to build and multiplex every call.
        for name, address in settings.service_addresses().items():
            channels[name] = grpc.aio.insecure_channel(address)
        openapi.update(openapi_document())
        try:
            yield
        finally:
            for channel in channels.values():
                await channel.close()

    async def healthz(request: Request) -> JSONResponse:
        statuses = await health.check_all(channels, settings.health_deadline_seconds)
        ok = all(status == health.SERVING for status in statuses.values())
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "services": statuses},
            status_code=200 if ok else 503,
        )

    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(openapi)

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(_DOCS_PAGE)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
