"""Every service starts on the kit, reports health, lists itself through reflection
and answers an empty request plainly: UNIMPLEMENTED until the RPC's issue lands,
INVALID_ARGUMENT once it validates its input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.kit import migrations
from services.kit.settings import SERVICE_NAMES
from tests.support.services import service_in_process

pytestmark = pytest.mark.integration

FULL_NAMES = {s: f"tally.{s}.v1.{s.capitalize()}Service" for s in SERVICE_NAMES}


@pytest.fixture(autouse=True)
def _stripe_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Payments refuses to start without a provider key; nothing here calls Stripe.
    monkeypatch.setenv("PAYMENTS_STRIPE_API_KEY", "sk_test_unused")


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> AsyncIterator[str]:
    for service in SERVICE_NAMES:
        await migrations.upgrade_async(service, database_url)
    yield database_url


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_service_is_serving_and_reflects_its_api(
    migrated: str, nats_url: str, service: str
) -> None:
    async with (
        service_in_process(service, migrated, nats_url) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", FULL_NAMES[service]):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # The reflection client is synchronous and the server shares this
        # event loop, so the client runs on another thread.
        services, described = await asyncio.to_thread(_reflect, runtime.port, FULL_NAMES[service])
        assert {FULL_NAMES[service], "grpc.health.v1.Health"} <= services
        assert len(described.methods) > 0

        # Never INTERNAL or UNKNOWN: unimplemented, or a named validation error.
        method = described.methods[0]
        call = channel.unary_unary(
            f"/{described.full_name}/{method.name}",
            request_serializer=lambda _: b"",
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(None, timeout=5)
        assert caught.value.code() in {
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.INVALID_ARGUMENT,
        }


async def test_shutdown_reports_not_serving_before_stopping(migrated: str, nats_url: str) -> None:
    async with (
        service_in_process("catalog", migrated, nats_url) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        await runtime.health.enter_graceful_shutdown()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_api_only_replica_runs_no_background_work(migrated: str, nats_url: str) -> None:
    async with service_in_process(
        "usage", migrated, nats_url, worker_billing_enabled=False
    ) as api_only:
        names = {t.get_name() for t in api_only._tasks}
        assert not any("outbox-relay" in n for n in names)
    async with service_in_process("usage", migrated, nats_url) as worker:
        names = {t.get_name() for t in worker._tasks}
        assert any("outbox-relay" in n for n in names)


def _reflect(port: int, service: str) -> tuple[set[str], ServiceDescriptor]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reflection_db = ProtoReflectionDescriptorDatabase(channel)
        services = set(reflection_db.get_services())
        described = DescriptorPool(reflection_db).FindServiceByName(service)
    return services, described


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_service_answers_health_on_its_http_port(
    migrated: str, nats_url: str, service: str
) -> None:
    import httpx

    async with service_in_process(service, migrated, nats_url) as runtime:
        assert runtime.http is not None
        url = f"http://127.0.0.1:{runtime.http.port}/healthz"
        async with httpx.AsyncClient() as client:
            answer = await client.get(url)
    assert answer.status_code == 200
    assert answer.json() == {"service": service, "status": "SERVING"}
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)
