"""Signing events as Stripe does and delivering them, in order, from one background task."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 0.5, 1.0)
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
CONNECTION_FAILED = 0


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value: ``t=<unix>,v1=<hmac_sha256(secret, "t.body")>``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()


class WebhookSender:
    """Queues events and posts each to the current URL with the current secret.

    ``target`` is read at send time, so the URL and secret may change while
    deliveries are queued (the receiver's port may be known only later).
    """

    def __init__(self, target: Callable[[], tuple[str | None, str]]) -> None:
        self._target = target
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.deliveries: list[tuple[str, int]] = []

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=5.0)
        self._task = asyncio.create_task(self._run(), name="stripe-emulator:webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def enqueue(self, event: dict[str, Any]) -> None:
        self._queue.put_nowait(event)

    async def wait_idle(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._queue.join()

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                for delay in (*RETRY_DELAYS, None):
                    status = await self.send(event)
                    if 200 <= status < 300 or delay is None:
                        break
                    await asyncio.sleep(delay)
            except Exception:
                log.exception("webhook delivery of %s failed", event["id"])
            finally:
                self._queue.task_done()

    async def send(self, event: dict[str, Any]) -> int:
        """One attempt, freshly signed; the status is recorded (0 when nothing answered)."""
        url, secret = self._target()
        if url is None or self._client is None:
            return CONNECTION_FAILED
        body = encode(event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(body, secret),
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            log.info("webhook %s to %s: %s", event["id"], url, exc)
            status = CONNECTION_FAILED
        self.deliveries.append((event["id"], status))
        return status
