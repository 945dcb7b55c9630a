"""The suite's health as one answer: each service's gRPC health, asked at once."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.ServingStatus.Name(health_pb2.HealthCheckResponse.SERVING)


async def check(channel: grpc.aio.Channel, timeout: float) -> str:
    """SERVING, NOT_SERVING, ... or UNREACHABLE when the service does not answer."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


async def check_all(channels: dict[str, grpc.aio.Channel], timeout: float) -> dict[str, str]:
    names = list(channels)
    results = await asyncio.gather(*(check(channels[n], timeout) for n in names))
    return dict(zip(names, results, strict=True))
