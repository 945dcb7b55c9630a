"""A running emulator, the real SDK pointed at it, and a real webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.stripe_emulator import DEFAULT_API_KEY, StripeEmulator
from services.kit.http import HttpEndpoint


@dataclass
class Receiver:
    """A webhook endpoint that verifies each delivery as the payments service would."""

    secret: str
    url: str = ""
    events: list[Any] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    # Status codes to answer with before settling on 200, one per delivery attempt.
    failures: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if self.failures:
            return Response(status_code=self.failures.pop(0))
        try:
            event = stripe.Webhook.construct_event(
                body, request.headers.get("stripe-signature"), self.secret
            )
        except stripe.SignatureVerificationError as exc:
            self.rejected.append(str(exc))
            return Response(status_code=400)
        self.events.append(event)
        self.arrived.set()
        return Response(status_code=200)

    async def wait_for(self, event_type: str, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while event_type not in self.types():
                self.arrived.clear()
                await self.arrived.wait()

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def client_for(emu: StripeEmulator, api_key: str = DEFAULT_API_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": emu.base_url},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
        max_network_retries=0,
    )


async def customer_with_card(client: stripe.StripeClient, token: str) -> tuple[str, str]:
    """A new customer and the payment method a SetupIntent attached to it from ``token``."""
    customer = await client.v1.customers.create_async(params={"email": "a@example.com"})
    seti = await client.v1.setup_intents.create_async(
        params={
            "customer": customer.id,
            "usage": "off_session",
            "payment_method_types": ["card"],
            "confirm": True,
            "payment_method": token,
        }
    )
    assert seti.status == "succeeded"
    assert isinstance(seti.payment_method, str)
    return customer.id, seti.payment_method


@pytest.fixture
async def emu() -> AsyncIterator[StripeEmulator]:
    async with StripeEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: StripeEmulator) -> stripe.StripeClient:
    return client_for(emu)


@contextlib.asynccontextmanager
async def receiving(emu: StripeEmulator) -> AsyncIterator[Receiver]:
    """A receiver listening, with ``emu`` sending its webhooks to it."""
    receiver = Receiver(secret=emu.webhook_secret)
    app = Starlette(routes=[Route("/webhooks/stripe", receiver.handle, methods=["POST"])])
    endpoint = HttpEndpoint("receiver", app, "127.0.0.1", 0)
    await endpoint.start()
    receiver.url = f"http://127.0.0.1:{endpoint.port}/webhooks/stripe"
    emu.webhook_url = receiver.url
    try:
        yield receiver
    finally:
        await endpoint.stop()


@pytest.fixture
async def receiver(emu: StripeEmulator) -> AsyncIterator[Receiver]:
    async with receiving(emu) as receiver:
        yield receiver
