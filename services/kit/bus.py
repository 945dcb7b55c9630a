"""The NATS JetStream connection of one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from services.kit.errors import StartupError
from services.kit.events import EventEnvelope

log = logging.getLogger(__name__)

ConnectionListener = Callable[[bool], Awaitable[None]]


class EventBus:
    """Publishes envelopes to JetStream and provisions streams.

    Reconnects forever once connected: a NATS restart must pause the relay and
    consumers, not kill the service. ``on_connection_change`` lets the server
    flip its health status while NATS is away.
    """

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=10)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        timeout: float = 10.0,
        on_connection_change: ConnectionListener | None = None,
    ) -> EventBus:
        async def disconnected() -> None:
            log.warning("nats disconnected from %s", url)
            if on_connection_change:
                await on_connection_change(False)

        async def reconnected() -> None:
            log.info("nats reconnected to %s", url)
            if on_connection_change:
                await on_connection_change(True)

        async def error(exc: Exception) -> None:
            log.debug("nats error: %s", exc)

        try:
            async with asyncio.timeout(timeout):
                nc = await nats.connect(
                    servers=url.split(","),
                    name=name,
                    connect_timeout=min(2.0, timeout),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                )
        except TimeoutError:
            raise StartupError(
                f"NATS unreachable at {url}: no answer within {timeout:g}s"
            ) from None
        except Exception as exc:
            raise StartupError(
                f"NATS unreachable at {url}: {str(exc) or type(exc).__name__}"
            ) from None
        bus = cls(nc)
        try:
            await bus.js.account_info()
        except Exception as exc:
            await nc.close()
            raise StartupError(f"NATS at {url} has no JetStream enabled: {exc}") from None
        return bus

    async def ensure_streams(self, configs: Iterable[StreamConfig]) -> None:
        """Create or update streams; safe to run from every replica at every start."""
        for config in configs:
            assert config.name is not None
            try:
                await self.js.stream_info(config.name)
            except NotFoundError:
                try:
                    await self.js.add_stream(config)
                    continue
                except BadRequestError:
                    pass  # another replica created it between our two calls
            await self.js.update_stream(config)

    async def publish(self, envelope: EventEnvelope) -> None:
        await self.js.publish(envelope.subject, envelope.payload, headers=envelope.headers())

    async def publish_many(self, envelopes: list[EventEnvelope], timeout: float = 10.0) -> int:
        """Publish in order, pipelined, and wait for the acks.

        Returns how many leading envelopes JetStream acknowledged; a failure
        stops counting there, so the caller records exactly those as sent and
        retries the rest (a repeat is harmless: ``Nats-Msg-Id`` dedupes it).
        """
        acked = 0
        futures: list[asyncio.Future[object]] = []
        try:
            for e in envelopes:
                futures.append(
                    await self.js.publish_async(e.subject, e.payload, headers=e.headers())
                )
            for future in futures:
                await asyncio.wait_for(future, timeout)
                acked += 1
        except Exception as exc:
            log.warning("publish stopped after %d of %d events: %s", acked, len(envelopes), exc)
            for rest in futures[acked:]:
                rest.cancel()
        return acked

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                await self.nc.close()
