"""A service's own HTTP port: health, metrics and the few non-gRPC routes.

gRPC carries the API; HTTP carries what outside systems insist on speaking
(Stripe's webhooks are signed over raw bytes, Prometheus scrapes text). The
endpoint runs inside the service's event loop under the runtime's control, so
SIGTERM stops it with everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.kit.devstack.errors import DevStackError
from services.kit.devstack.ports import ensure_port_free
from services.kit.errors import StartupError
from services.kit.telemetry import prometheus_text

log = logging.getLogger(__name__)

STARTUP_SECONDS = 10.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the service runtime owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def service_app(
    service: str, is_serving: Callable[[], bool], routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """The Starlette app of one service: ``/healthz`` plus the service's routes."""

    async def healthz(_: Request) -> Response:
        serving = is_serving()
        return JSONResponse(
            {"service": service, "status": "SERVING" if serving else "NOT_SERVING"},
            status_code=200 if serving else 503,
        )

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *routes,
        ]
    )


async def metrics_endpoint(_: Request) -> Response:
    """Prometheus' scrape target: every OpenTelemetry metric of this process."""
    body, content_type = prometheus_text()
    return Response(body, media_type=content_type)


class HttpEndpoint:
    """Serves an ASGI app on host:port until :meth:`stop`."""

    def __init__(self, service: str, app: Starlette, host: str, port: int) -> None:
        self.service = service
        self.app = app
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = f"{self.service.upper()}_HTTP_PORT"
        if self.requested_port:
            try:
                ensure_port_free(self.requested_port, self.host, what=f"{self.service} ({env})")
            except DevStackError as exc:
                raise StartupError(str(exc)) from None
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.requested_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = _EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(self._serve(server), name=f"{self.service}:http")
        async with asyncio.timeout(STARTUP_SECONDS):
            while not server.started:
                if self._task.done():
                    raise StartupError(
                        f"{self.service}: cannot listen on {self.host}:{self.requested_port}"
                        f" for HTTP (set {env})"
                    )
                await asyncio.sleep(0.01)
        self.port = int(server.servers[0].sockets[0].getsockname()[1])

    @staticmethod
    async def _serve(server: uvicorn.Server) -> None:
        try:
            await server.serve()
        except SystemExit:
            # uvicorn exits the process when it cannot bind; here that is a
            # start-up failure the runtime reports, not a process exit.
            log.error("HTTP endpoint failed to start")

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await self._task
        except TimeoutError:
            self._task.cancel()
        self._server = None
        self._task = None
