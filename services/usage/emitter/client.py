"""``UsageEmitter``: how product code sends usage without slowing down.

``emit()`` never waits on the network: it stamps the event with its
idempotency key and time, appends it to a bounded buffer and returns. A
background task cuts the buffer into batches (by size, or every
``flush_interval``), keeps at most ``max_in_flight`` batches on the wire,
paces them to ``max_events_per_second`` and retries transient failures with
the same events, hence the same keys: a batch the server stored but whose
answer was lost is resent and reported as duplicates, never counted twice.
``close()`` flushes what is buffered before returning.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tally.usage.v1 import resources_pb2, usage_pb2, usage_pb2_grpc

log = logging.getLogger("tally.usage.emitter")

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


@dataclass(frozen=True)
class EmitterConfig:
    address: str = "127.0.0.1:50053"
    max_batch: int = 500  # events per call (the server takes up to 1,000)
    flush_interval: float = 0.25  # seconds a partial batch may wait
    max_in_flight: int = 4  # concurrent calls
    max_events_per_second: float | None = None  # None: no pacing
    max_buffer: int = 100_000  # beyond this, emit() drops and says so
    call_timeout: float = 10.0
    retry_base_delay: float = 0.1
    retry_max_delay: float = 5.0
    close_timeout: float = 30.0  # how long close() keeps trying to deliver

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= 1000:
            raise ValueError("max_batch must be 1..1000")
        if self.max_in_flight < 1 or self.max_buffer < 1 or self.flush_interval <= 0:
            raise ValueError("max_in_flight, max_buffer and flush_interval must be positive")


@dataclass
class EmitterStats:
    emitted: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0  # buffer full, or undeliverable (a non-retryable error)
    retries: int = 0
    rejections: dict[str, int] = field(default_factory=dict)


class _Pacer:
    """A token bucket: at most ``rate`` events per second, bursts of one second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.tokens = rate or 0.0
        self.at = time.monotonic()

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now
            # A batch larger than one second's budget goes once the bucket is full.
            if self.tokens >= min(n, self.rate):
                self.tokens -= n
                return
            await asyncio.sleep((min(n, self.rate) - self.tokens) / self.rate)


class UsageEmitter:
    def __init__(
        self, config: EmitterConfig | None = None, *, channel: grpc.aio.Channel | None = None
    ) -> None:
        self.config = config or EmitterConfig()
        self.stats = EmitterStats()
        self._own_channel = channel is None
        self._channel = channel
        self._stub: Any = None
        self._buffer: collections.deque[resources_pb2.UsageEvent] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Condition()
        self._in_flight = 0  # events in calls not yet answered
        self._slots = asyncio.Semaphore(self.config.max_in_flight)
        self._pacer = _Pacer(self.config.max_events_per_second)
        self._runner: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._closing = False
        self._stopped = False
        self._give_up_at: float | None = None

    async def start(self) -> Self:
        if self._runner is None:
            if self._channel is None:
                self._channel = grpc.aio.insecure_channel(self.config.address)
            self._stub = usage_pb2_grpc.UsageServiceStub(self._channel)
            self._runner = asyncio.create_task(self._run(), name="usage-emitter")
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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
    ) -> str | None:
        """Queue one event; returns its idempotency key, or None if it was dropped.

        Never awaits. The key (given, or a fresh UUID) and the time are fixed
        here, so every retry of this event is recognisably the same event.
        """
        key = idempotency_key or str(uuid.uuid4())
        if self._closing or len(self._buffer) >= self.config.max_buffer:
            self.stats.dropped += 1
            log.warning(
                "usage emitter dropped event %s: %s",
                key,
                "closing" if self._closing else "buffer full",
            )
            return None
        ts = Timestamp()
        ts.FromDatetime(event_time or datetime.now(UTC))
        self._buffer.append(
            resources_pb2.UsageEvent(
                org_id=org_id,
                metric_code=metric_code,
                value="" if value is None else str(value),
                event_time=ts,
                idempotency_key=key,
                subscription_id=subscription_id,
                properties=dict(properties or {}),
            )
        )
        self.stats.emitted += 1
        if len(self._buffer) >= self.config.max_batch:
            self._wake.set()
        return key

    @property
    def pending(self) -> int:
        """Events buffered or on the wire, not yet answered."""
        return len(self._buffer) + self._in_flight

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every event emitted so far has an answer (or was dropped)."""
        if self._runner is None:
            raise RuntimeError("UsageEmitter.flush() before start(): nothing would send")
        self._wake.set()
        async with asyncio.timeout(timeout), self._idle:
            await self._idle.wait_for(lambda: self.pending == 0)

    async def close(self) -> None:
        """Deliver what is buffered (up to ``close_timeout``), then stop."""
        if self._runner is None:
            return
        self._closing = True
        self._give_up_at = time.monotonic() + self.config.close_timeout
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await self.flush(self.config.close_timeout)
        self._stopped = True
        self._wake.set()
        for task in [self._runner, *self._calls]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runner = None
        if self.pending:
            self.stats.dropped += self.pending
            log.error("usage emitter closed with %d events undelivered", self.pending)
            self._buffer.clear()
        if self._own_channel and self._channel is not None:
            await self._channel.close()

    async def _run(self) -> None:
        while not self._stopped:
            partial = len(self._buffer) < self.config.max_batch
            if not self._buffer or (partial and not self._closing):
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races with the event being set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.flush_interval):
                        await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                await self._slots.acquire()
                count = min(len(self._buffer), self.config.max_batch)
                batch = [self._buffer.popleft() for _ in range(count)]
                self._in_flight += count
                await self._pacer.take(count)
                task = asyncio.create_task(self._send(batch))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
                if len(self._buffer) < self.config.max_batch and not self._closing:
                    break

    async def _send(self, batch: list[resources_pb2.UsageEvent]) -> None:
        # Only rejections are acted on (counted, logged): accepted results would
        # be answered, encoded and parsed for nothing.
        request = usage_pb2.RecordUsageBatchRequest(events=batch, omit_accepted_results=True)
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    reply = await self._stub.RecordUsageBatch(
                        request, timeout=self.config.call_timeout, wait_for_ready=False
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRYABLE or self._past_deadline():
                        self.stats.dropped += len(batch)
                        log.error(
                            "usage emitter gave up on %d events: %s %s",
                            len(batch),
                            exc.code().name,
                            exc.details(),
                        )
                        return
                    self.stats.retries += 1
                    delay = min(
                        self.config.retry_max_delay,
                        self.config.retry_base_delay * 2 ** min(attempt, 10),
                    )
                    await asyncio.sleep(delay * (0.5 + random.random() / 2))
                    continue
                self._record(reply)
                return
        finally:
            self._slots.release()
            async with self._idle:
                self._in_flight -= len(batch)
                self._idle.notify_all()

    def _past_deadline(self) -> bool:
        return self._give_up_at is not None and time.monotonic() > self._give_up_at

    def _record(self, reply: usage_pb2.RecordUsageBatchResponse) -> None:
        self.stats.accepted += reply.accepted_count
        self.stats.duplicates += reply.duplicate_count
        self.stats.rejected += reply.rejected_count
        for r in reply.results:
            if r.status == resources_pb2.USAGE_EVENT_STATUS_REJECTED:
                name = resources_pb2.UsageRejectionReason.Name(r.reason)
                self.stats.rejections[name] = self.stats.rejections.get(name, 0) + 1
                log.warning("usage event %s rejected: %s", r.idempotency_key, r.message)
