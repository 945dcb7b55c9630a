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

    def __init__(
        self, url: str, name: str, on_connection_change: ConnectionListener | None
    ) -> None:
        self.url = url
        self.name = name
        self._listener = on_connection_change
        self._closing = False
        self.nc: Client
        self.js: JetStreamContext

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        timeout: float = 10.0,
        on_connection_change: ConnectionListener | None = None,
    ) -> EventBus:
        bus = cls(url, name, on_connection_change)
        await bus._connect(timeout)
        return bus

    async def _connect(self, timeout: float) -> None:
        url = self.url
        try:
            async with asyncio.timeout(timeout):
                self.nc = await nats.connect(
                    servers=url.split(","),
                    name=self.name,
                    connect_timeout=min(2.0, timeout),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    drain_timeout=5,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                )
        except TimeoutError:
            raise StartupError(
                f"NATS unreachable at {url}: no answer within {timeout:g}s"
            ) from None
        except Exception as exc:
            raise StartupError(
                f"NATS unreachable at {url}: {str(exc) or type(exc).__name__}"
            ) from None
        self.js = self.nc.jetstream(timeout=10)
        try:
            await self.js.account_info()
        except Exception as exc:
            await self.nc.close()
            raise StartupError(f"NATS at {url} has no JetStream enabled: {exc}") from None

    async def _disconnected(self) -> None:
        if self._closing:
            return
        log.warning("nats disconnected from %s", self.url)
        if self._listener:
            await self._listener(False)

    async def _reconnected(self) -> None:
        log.info("nats reconnected to %s", self.url)
        if self._listener:
            await self._listener(True)

    async def _error(self, exc: Exception) -> None:
        log.debug("nats error: %s", exc)

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
        self._closing = True
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                await self.nc.close()
