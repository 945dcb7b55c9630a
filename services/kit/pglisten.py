"""Hearing PostgreSQL notifications on one channel, on a connection of its own.

NOTIFY reaches only sessions that are listening when the sending transaction
commits: whatever was sent while this connection was away is lost for good.
So the owner hears ``listening(True)`` once LISTEN is in effect on a new
connection and ``listening(False)`` as soon as that connection is found gone,
and forgets whatever it derived from notifications at both (what it missed is
unknown). A dropped network path shows only when something is sent, hence the
periodic check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from services.kit.db import redact
from services.kit.settings import libpq_url
from services.kit.tasks import raise_if_cancelling

log = logging.getLogger(__name__)

CLOSE_SECONDS = 2.0


class PgListener:
    """Listens on ``channel`` until cancelled, reconnecting with backoff.

    ``on_notify(payload)`` runs on the event loop for each notification, in
    commit order; if it raises, the connection is dropped (and its owner told
    so), since a notification that could not be applied is as good as lost.
    """

    def __init__(
        self,
        database_url: str,
        channel: str,
        on_notify: Callable[[str], None],
        on_listening: Callable[[bool], None],
        *,
        application_name: str,
        check_seconds: float = 5.0,
        connect_timeout: float = 10.0,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.dsn = libpq_url(database_url)
        self.channel = channel
        self.on_notify = on_notify
        self.on_listening = on_listening
        self.application_name = application_name
        self.check_seconds = check_seconds
        self.connect_timeout = connect_timeout
        self.max_backoff_seconds = max_backoff_seconds

    async def run(self) -> None:
        while True:
            conn, lost = await self._connect()
            try:
                self.on_listening(True)
                await self._until_lost(conn, lost)
                log.warning("listener on %s lost its connection; reconnecting", self.channel)
            finally:
                self.on_listening(False)
                await _close(conn)

    async def _connect(self) -> tuple[Any, asyncio.Event]:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_random_exponential(multiplier=0.1, max=self.max_backoff_seconds),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._open()
        raise AssertionError("unreachable: retries never stop")

    async def _open(self) -> tuple[Any, asyncio.Event]:
        lost = asyncio.Event()
        conn: Any = await asyncpg.connect(
            self.dsn,
            timeout=self.connect_timeout,
            server_settings={"application_name": self.application_name},
        )
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self.channel, self._notified)
        except BaseException:
            await _close(conn)
            raise
        log.info("listening on %s at %s", self.channel, redact(self.dsn))
        return conn, lost

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            self.on_notify(payload)
        except Exception:
            log.exception("notification on %s could not be applied; reconnecting", channel)
            conn.terminate()

    async def _until_lost(self, conn: Any, lost: asyncio.Event) -> None:
        while not (lost.is_set() or conn.is_closed()):
            try:
                async with asyncio.timeout(self.check_seconds):
                    await lost.wait()
                return
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(self.check_seconds):
                    await conn.execute("SELECT 1")
            except Exception:
                raise_if_cancelling()
                return


async def _close(conn: Any) -> None:
    if conn.is_closed():
        return
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await conn.close()
    except Exception:
        conn.terminate()
        raise_if_cancelling()
    except BaseException:
        conn.terminate()
        raise
