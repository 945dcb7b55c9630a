"""The real gateway ASGI app in-process, driven by httpx, plus token helpers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from gateway.auth import issue_dev_token
from services.kit import migrations
from services.kit.devstack import free_port
from services.kit.settings import GatewaySettings
from tests.support.services import service_in_process

# What the integration tests run behind the gateway; invoicing and payments are
# pointed at a port nobody listens on, so their routes answer 503.
RUNNING_SERVICES = ("catalog", "subscriptions", "usage")

SECRET = "test-gateway-secret-of-at-least-64-bytes-for-hs512-0123456789abcdef"
AUDIENCE = "tally-billing"
ISSUER = "tally-dev"


def gateway_settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "jwt_hs256_secret": SECRET,
        "jwt_audience": AUDIENCE,
        "jwt_issuer": ISSUER,
        "internal_api_key": "test-internal-key",
        **overrides,
    }
    return GatewaySettings(**values)


def token(
    *,
    subject: str = "user-1",
    org: str | None = None,
    permissions: list[str] | None = None,
    roles: list[str] | None = None,
    service: str | None = None,
    org_tags: list[str] | None = None,
    ttl: int = 3600,  # module-level tokens must outlive a long session before use
    now: float | None = None,
) -> str:
    return issue_dev_token(
        SECRET,
        subject=subject,
        audience=AUDIENCE,
        issuer=ISSUER,
        ttl_seconds=ttl,
        org_id=org,
        permissions=permissions,
        roles=roles,
        service=service,
        org_tags=org_tags,
        now=now,
    )


def portal_headers(org: str, subject: str | None = None) -> dict[str, str]:
    bearer = token(subject=subject or f"user@{org}", org=org, permissions=["organization:billing"])
    return {"Authorization": f"Bearer {bearer}"}


def admin_headers(role: str = "billing_admin", subject: str = "finance-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(subject=subject, roles=[role])}"}


def service_headers(service: str = "product-api") -> dict[str, str]:
    bearer = token(subject=f"service:{service}", service=service)
    return {"Authorization": f"Bearer {bearer}"}


@asynccontextmanager
async def gateway_client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, so channels exist as under uvicorn."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client,
    ):
        yield client


@asynccontextmanager
async def gateway_over_services(
    database_url: str, nats_url: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """Real catalog, subscriptions and usage services in-process behind the real app."""
    async with (
        services_for_gateway(database_url, nats_url, **overrides) as settings,
        gateway_client(settings) as client,
    ):
        yield client


@asynccontextmanager
async def gateway_served_over_services(
    database_url: str, nats_url: str, **overrides: Any
) -> AsyncIterator[str]:
    """As ``gateway_over_services``, but served by uvicorn on a free port: its base URL.

    For clients that bring their own HTTP stack (the official Lago, OpenMeter
    and Stripe SDKs), called from a thread while the loop serves.
    """
    async with (
        services_for_gateway(database_url, nats_url, **overrides) as settings,
        gateway_served(settings) as base_url,
    ):
        yield base_url


@asynccontextmanager
async def gateway_served(settings: GatewaySettings) -> AsyncIterator[str]:
    """The gateway app with ``settings`` served by uvicorn on a free port: its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the gateway did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def services_for_gateway(
    database_url: str, nats_url: str, **overrides: Any
) -> AsyncIterator[GatewaySettings]:
    """The services in-process, and the gateway settings pointing at them."""
    for service in RUNNING_SERVICES:
        await migrations.upgrade_async(service, database_url)
    nobody = f"127.0.0.1:{free_port()}"
    # Aggregates follow events quickly, so tests reading them need not wait long.
    previous = os.environ.get("USAGE_AGGREGATED_INTERVAL_SECONDS")
    os.environ["USAGE_AGGREGATED_INTERVAL_SECONDS"] = "0.2"
    try:
        async with (
            service_in_process("catalog", database_url, nats_url, outbox_poll_seconds=0.05) as c,
            service_in_process(
                "subscriptions", database_url, nats_url, outbox_poll_seconds=0.05
            ) as s,
            service_in_process("usage", database_url, nats_url, outbox_poll_seconds=0.05) as u,
        ):
            settings = gateway_settings(
                **{
                    "catalog_addr": f"127.0.0.1:{c.port}",
                    "subscriptions_addr": f"127.0.0.1:{s.port}",
                    "usage_addr": f"127.0.0.1:{u.port}",
                    "invoicing_addr": nobody,
                    "payments_addr": nobody,
                    "grpc_deadline_seconds": 3.0,
                    # Fuzzes and sweeps send hundreds of requests.
                    "rate_limit_per_subject": "100000/minute",
                    "rate_limit_per_org": "100000/minute",
                    **overrides,
                }
            )
            yield settings
    finally:
        if previous is None:
            os.environ.pop("USAGE_AGGREGATED_INTERVAL_SECONDS", None)
        else:
            os.environ["USAGE_AGGREGATED_INTERVAL_SECONDS"] = previous
