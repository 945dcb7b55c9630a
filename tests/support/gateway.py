"""The real gateway ASGI app in-process, driven by httpx, plus token helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.app import create_app
from gateway.auth import issue_dev_token
from services.kit.settings import GatewaySettings

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
    ttl: int = 300,
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
