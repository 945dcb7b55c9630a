"""The emitter client: everything delivered exactly once through a usage
service restart; the sync facade; ASGI and gRPC middleware metering requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.kit import migrations
from services.kit.devstack import free_port
from services.usage.emitter import (
    EmitterConfig,
    SyncUsageEmitter,
    UsageEmitter,
    UsageMeteringInterceptor,
    UsageMeteringMiddleware,
)
from tests.support.usage import aggregate, uid, usage_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> AsyncIterator[str]:
    await migrations.upgrade_async("usage", database_url)
    yield database_url


def fast(address: str, **kw: object) -> EmitterConfig:
    options: dict[str, object] = {
        "address": address,
        "max_batch": 200,
        "flush_interval": 0.05,
        "retry_base_delay": 0.05,
        "retry_max_delay": 0.3,
        "call_timeout": 5.0,
        **kw,
    }
    return EmitterConfig(**options)  # type: ignore[arg-type]


async def test_everything_delivered_exactly_once_through_a_server_restart(
    migrated: str, nats_url: str
) -> None:
    port = free_port()
    org = uid("org")
    emitter = await UsageEmitter(fast(f"127.0.0.1:{port}")).start()
    async with usage_stack(migrated, nats_url, port=port) as (_rt, stub, seeder, _bus):
        await seeder.metrics()
        sub, _, _ = await seeder.subscription(org)
        for i in range(1500):
            emitter.emit(org, "bytes_sent", "2", idempotency_key=f"e{i}")
            if i % 100 == 0:
                await asyncio.sleep(0.01)  # let batches go out while the server runs
    # The server is down: emit() still returns at once, events wait and retry.
    started = time.perf_counter()
    for i in range(1500, 3000):
        assert emitter.emit(org, "bytes_sent", "2", idempotency_key=f"e{i}") == f"e{i}"
    assert time.perf_counter() - started < 0.5
    await asyncio.sleep(0.5)
    assert emitter.pending > 0 and emitter.stats.retries > 0
    async with usage_stack(migrated, nats_url, port=port) as (_rt, stub, _seeder, _bus):
        await emitter.flush(timeout=30)
        await emitter.close()
        stats = emitter.stats
        assert stats.dropped == 0 and stats.rejected == 0
        assert stats.accepted + stats.duplicates == 3000
        assert await aggregate(stub, sub, "bytes_sent") == (6000, 3000)


async def test_sync_facade_and_pacing(migrated: str, nats_url: str) -> None:
    async with usage_stack(migrated, nats_url) as (runtime, stub, seeder, _bus):
        await seeder.metrics()
        org = uid("org")
        sub, _, _ = await seeder.subscription(org)
        config = fast(f"127.0.0.1:{runtime.port}", max_events_per_second=400.0, max_batch=100)
        facade = await asyncio.to_thread(SyncUsageEmitter, config)
        keys = [facade.emit(org, "api_calls") for _ in range(800)]
        assert len(set(keys)) == 800
        started = time.perf_counter()
        await asyncio.to_thread(facade.close)
        elapsed = time.perf_counter() - started
        # 800 events at 400/s with a one-second burst: at least ~1 s.
        assert elapsed >= 0.9, elapsed
        assert facade.stats.accepted == 800
        assert await aggregate(stub, sub, "api_calls") == (800, 800)


async def test_asgi_middleware_meters_each_request_of_an_org(migrated: str, nats_url: str) -> None:
    async with usage_stack(migrated, nats_url) as (runtime, stub, seeder, _bus):
        await seeder.metrics()
        org = uid("org")
        sub, _, _ = await seeder.subscription(org)
        async with UsageEmitter(fast(f"127.0.0.1:{runtime.port}")) as emitter:

            async def hello(request: Request) -> PlainTextResponse:
                return PlainTextResponse("hi")

            app = UsageMeteringMiddleware(
                Starlette(routes=[Route("/hello", hello)]), emitter, "api_calls"
            )
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                headers = {"x-org-id": org}
                for _ in range(5):
                    assert (await client.get("/hello", headers=headers)).status_code == 200
                assert (await client.get("/missing", headers={"x-org-id": org})).status_code == 404
                assert (await client.get("/hello")).status_code == 200  # no org: not metered
            await emitter.flush(timeout=10)
        assert await aggregate(stub, sub, "api_calls") == (6, 6)


async def test_grpc_interceptor_meters_each_unary_call(migrated: str, nats_url: str) -> None:
    async with usage_stack(migrated, nats_url) as (runtime, stub, seeder, _bus):
        await seeder.metrics()
        org = uid("org")
        sub, _, _ = await seeder.subscription(org)
        async with UsageEmitter(fast(f"127.0.0.1:{runtime.port}")) as emitter:
            server = grpc.aio.server(interceptors=[UsageMeteringInterceptor(emitter, "api_calls")])
            health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    product = health_pb2_grpc.HealthStub(channel)
                    for _ in range(3):
                        await product.Check(
                            health_pb2.HealthCheckRequest(), metadata=[("x-org-id", org)], timeout=5
                        )
                    await product.Check(health_pb2.HealthCheckRequest(), timeout=5)
            finally:
                await server.stop(0)
            await emitter.flush(timeout=10)
        assert await aggregate(stub, sub, "api_calls") == (3, 3)
