"""`tally health`, the containers' health check, against a real service and gateway."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from unittest import mock

import pytest
import uvicorn

from gateway.app import create_app
from services.cli.main import main
from services.kit import migrations
from services.kit.devstack import free_port
from tests.support.gateway import gateway_settings
from tests.support.services import service_in_process

pytestmark = pytest.mark.integration


async def _tally(*argv: str, env: dict[str, str] | None = None) -> int:
    # Synchronous gRPC and HTTP clients: off the loop the servers run on.
    with mock.patch.dict(os.environ, env or {}):
        return await asyncio.to_thread(main, list(argv))


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> AsyncIterator[str]:
    await migrations.upgrade_async("catalog", database_url)
    yield database_url


async def test_a_serving_service_is_healthy_on_the_port_its_settings_name(
    migrated: str, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with service_in_process("catalog", migrated, nats_url, grpc_host="0.0.0.0") as runtime:
        port = str(runtime.port)
        assert await _tally("health", "catalog", env={"CATALOG_GRPC_PORT": port}) == 0
        assert f"catalog 127.0.0.1:{port} SERVING" in capsys.readouterr().out

        await runtime.health.enter_graceful_shutdown()
        assert await _tally("health", "catalog", "--address", f"127.0.0.1:{port}") == 1
        assert "NOT_SERVING" in capsys.readouterr().out


async def test_nothing_listening_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert await _tally("health", "usage", "--address", address, "--timeout", "1") == 1
    assert "UNREACHABLE" in capsys.readouterr().out
    assert await _tally("health", "gateway", "--address", address, "--timeout", "1") == 1


@asynccontextmanager
async def _gateway_serving(port: int) -> AsyncIterator[None]:
    # Every backend on a port nobody listens on: the gateway answers 503.
    dead = f"127.0.0.1:{free_port()}"
    settings = gateway_settings(
        **{f"{s}_addr": dead for s in ("catalog", "subscriptions", "usage", "invoicing")},
        payments_addr=dead,
        health_deadline_seconds=0.2,
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the gateway did not start"
            await asyncio.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        await task


async def test_the_gateway_is_healthy_while_it_answers_even_with_backends_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    async with _gateway_serving(port):
        assert await _tally("health", "gateway", env={"GATEWAY_HTTP_PORT": str(port)}) == 0
    out = capsys.readouterr().out
    assert f"gateway 127.0.0.1:{port} HTTP 503" in out
    assert "UNREACHABLE" in out  # the body names the backends that are down
