"""Sends pending webhook deliveries: lease them (one transaction), POST each
outside any transaction with httpx, record each answer (one transaction
each). A crash after the POST and before the record sends the delivery again
once its lease runs out, with the same ``id``: at least once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from services.kit.clock import Clock, SystemClock
from services.kit.tasks import raise_if_cancelling
from services.payments.metrics import record_webhook_attempt
from services.payments.outbound import domain as d
from services.payments.outbound import handlers as h
from services.payments.outbound.store import Delivery, Endpoint
from services.payments.repository import PaymentsUnitOfWork

log = logging.getLogger("tally.payments.webhooks")

BATCH = 50
_OUTCOMES = {
    d.DeliveryState.SUCCEEDED: "succeeded",
    d.DeliveryState.PENDING: "retrying",
    d.DeliveryState.FAILED: "failed",
}
USER_AGENT = "Tally-Webhooks/1"


class WebhookDispatcher:
    def __init__(
        self,
        make_uow: Callable[[], PaymentsUnitOfWork],
        *,
        clock: Clock | None = None,
        policy: d.RetryPolicy | None = None,
        timeout_seconds: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.make_uow = make_uow
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or d.RetryPolicy()
        self.timeout_seconds = timeout_seconds
        # Redirects are not followed: a receiver answers at the URL it registered.
        self.client = client or httpx.AsyncClient(
            timeout=timeout_seconds, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run_once(self, now: datetime | None = None) -> list[Delivery]:
        """Send every delivery due at ``now`` (the clock's when None); returns
        them as recorded. Tests drive retries by passing later instants."""
        at = now or self.clock.now()
        async with self.make_uow() as uow:
            leased = await uow.webhooks.lease_due(
                at, at + timedelta(seconds=self.timeout_seconds * 3), BATCH
            )
            await uow.commit()
        if not leased:
            return []
        return list(await asyncio.gather(*(self._send(dl, ep, at) for dl, ep in leased)))

    async def _send(self, delivery: Delivery, endpoint: Endpoint, at: datetime) -> Delivery:
        body = delivery.payload.encode()
        timestamp = int(at.timestamp())
        headers = {
            "Content-Type": "application/json",
            d.SIGNATURE_HEADER: d.signature_header(endpoint.signing_secrets(at), timestamp, body),
            d.DELIVERY_HEADER: delivery.delivery_id,
            d.EVENT_TYPE_HEADER: delivery.event_type,
        }
        started = time.perf_counter()
        status: int | None = None
        error = ""
        try:
            reply = await self.client.post(endpoint.url, content=body, headers=headers)
            status = reply.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        outcome = h.AttemptOutcome(status_code=status, response_ms=elapsed_ms, error=error)
        async with self.make_uow() as uow:
            recorded = await h.record_attempt(uow, delivery.delivery_id, outcome, at, self.policy)
            await uow.commit()
        record_webhook_attempt(_OUTCOMES[recorded.state])
        if not d.succeeded(status):
            log.info(
                "webhook %s to %s failed (%s), attempt %d",
                delivery.delivery_id,
                endpoint.endpoint_id,
                recorded.last_error,
                recorded.attempt_count,
            )
        return recorded

    async def run(self, interval_seconds: float) -> None:
        while True:
            try:
                async with asyncio.timeout(interval_seconds):
                    await self._wake.wait()
            except TimeoutError:
                raise_if_cancelling()
            self._wake.clear()
            try:
                while len(await self.run_once()) >= BATCH:
                    pass
            except Exception:
                raise_if_cancelling()
                log.exception("payments: webhook dispatch failed")
