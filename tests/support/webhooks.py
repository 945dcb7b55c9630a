"""A local HTTP receiver for outbound webhook tests: records every request,
answers the status the test sets, and can go down and come back on the same
port (connection refused meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.kit.devstack import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Receiver:
    status: int = 200
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    _server: _Server | None = None
    _task: asyncio.Task[None] | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ok(self, path: str = "") -> list[Received]:
        return [r for r in self.requests if 200 <= r.answered < 300 and r.path.startswith(path)]

    async def _record(self, request: Request) -> Response:
        body = await request.body()
        status = self.status
        self.requests.append(Received(request.url.path, dict(request.headers), body, status))
        return Response(status_code=status)

    async def start(self) -> None:
        app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        server = _Server(config)
        self._server = server
        task = asyncio.create_task(server.serve())
        self._task = task
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    raise OSError(f"webhook receiver cannot listen on port {self.port}")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = None
        self._task = None
