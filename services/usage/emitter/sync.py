"""A thread-safe, synchronous face of ``UsageEmitter`` for non-async code.

The emitter runs on its own event loop in a daemon thread; ``emit()`` only
hands the event over (``call_soon_threadsafe``) and returns its key at once.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

from services.usage.emitter.client import EmitterConfig, EmitterStats, UsageEmitter


class SyncUsageEmitter:
    def __init__(self, config: EmitterConfig | None = None) -> None:
        self.config = config or EmitterConfig()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="usage-emitter", daemon=True
        )
        self._thread.start()
        self._emitter: UsageEmitter = self._call(self._create())

    async def _create(self) -> UsageEmitter:
        return await UsageEmitter(self.config).start()

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def emit(
        self,
        org_id: str,
        metric_code: str,
        value: Decimal | int | str | None = None,
        *,
        idempotency_key: str | None = None,
        event_time: datetime | None = None,
        subscription_id: str = "",
        properties: Mapping[str, str] | None = None,
    ) -> str:
        """Queue one event from any thread; returns its idempotency key."""
        key = idempotency_key or str(uuid.uuid4())
        self._loop.call_soon_threadsafe(
            lambda: self._emitter.emit(
                org_id,
                metric_code,
                value,
                idempotency_key=key,
                event_time=event_time or datetime.now(UTC),
                subscription_id=subscription_id,
                properties=properties,
            )
        )
        return key

    @property
    def stats(self) -> EmitterStats:
        return self._emitter.stats

    def flush(self, timeout: float | None = None) -> None:
        self._call(self._emitter.flush(timeout))

    def close(self) -> None:
        if not self._loop.is_running():
            return
        self._call(self._emitter.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
