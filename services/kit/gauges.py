"""Queue-depth and pool gauges of a running service, for ``/metrics``.

Observable-gauge callbacks run synchronously inside a scrape, so they cannot
query PostgreSQL or NATS; a background sampler refreshes the outbox backlog and
the consumers' lag every few seconds and the callbacks report the last sample.
The pool gauges read SQLAlchemy's counters directly. Several services may run
in one process (tests), so every series carries a ``service`` attribute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.js.api import ConsumerInfo
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.kit.db import Database
from services.kit.outbox import Outbox
from services.kit.tasks import raise_if_cancelling

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0


@dataclass(frozen=True)
class ConsumerLag:
    """How far one durable consumer is behind its stream."""

    stream: str
    consumer: str
    pending: int  # in the stream, not yet delivered
    ack_pending: int  # delivered, not yet acknowledged
    redelivered: int  # delivered more than once and still unacknowledged

    @classmethod
    def of(cls, info: ConsumerInfo) -> ConsumerLag:
        return cls(
            stream=info.stream_name,
            consumer=info.name,
            pending=int(info.num_pending or 0),
            ack_pending=int(info.num_ack_pending or 0),
            redelivered=int(info.num_redelivered or 0),
        )


async def consumer_lag(js: Any, stream: str, consumer: str) -> ConsumerLag:
    return ConsumerLag.of(await js.consumer_info(stream, consumer))


@dataclass
class ServiceGauges:
    """The latest sample of one service; registered while the service runs."""

    service: str
    database: Database
    outbox: Outbox
    js: Any = None
    consumers: list[tuple[str, str]] = field(default_factory=list)  # (stream, durable)
    backlog: int | None = None
    lags: list[ConsumerLag] = field(default_factory=list)

    async def sample(self) -> bool:
        """Refresh what can be read now; True when every value was read."""
        complete = True
        try:
            async with self.database.sessions() as session:
                self.backlog = await self.outbox.pending_count(session)
        except Exception as exc:
            # A gauge going stale is better than a sampler taking the service
            # down while PostgreSQL or NATS is away.
            raise_if_cancelling()
            log.debug("%s: outbox backlog not sampled: %s", self.service, exc)
            complete = False
        lags = []
        for stream, consumer in self.consumers:
            try:
                lags.append(await consumer_lag(self.js, stream, consumer))
            except Exception as exc:
                # Also right after start, before the consumer provisioned itself.
                raise_if_cancelling()
                log.debug("%s: %s lag not sampled: %s", self.service, consumer, exc)
                complete = False
        self.lags = lags
        return complete

    async def sample_forever(self, interval: float = SAMPLE_SECONDS) -> None:
        while True:
            complete = await self.sample()
            # Retry soon while consumers are still provisioning, so a fresh
            # service shows its gauges at the first scrapes.
            await asyncio.sleep(interval if complete else min(interval, 0.5))


_registered: list[ServiceGauges] = []
_instruments_created = False


def register(gauges: ServiceGauges) -> None:
    _create_instruments()
    _registered.append(gauges)


def unregister(gauges: ServiceGauges) -> None:
    if gauges in _registered:
        _registered.remove(gauges)


def _observe(values: Iterable[tuple[int | None, dict[str, str]]]) -> list[Observation]:
    return [Observation(v, attrs) for v, attrs in values if v is not None]


def _backlog(_: CallbackOptions) -> Sequence[Observation]:
    return _observe((g.backlog, {"service": g.service}) for g in _registered)


def _lag_gauge(attr: str) -> Any:
    def callback(_: CallbackOptions) -> Sequence[Observation]:
        return _observe(
            (getattr(lag, attr), {"service": g.service, "consumer": lag.consumer})
            for g in _registered
            for lag in g.lags
        )

    return callback


def _pool(attr: str) -> Any:
    def callback(_: CallbackOptions) -> Sequence[Observation]:
        return _observe(
            (int(getattr(g.database.engine.pool, attr)()), {"service": g.service})
            for g in _registered
        )

    return callback


def _create_instruments() -> None:
    global _instruments_created
    if _instruments_created:
        return
    meter = metrics.get_meter("tally.kit")
    meter.create_observable_gauge(
        "billing.outbox.backlog",
        [_backlog],
        unit="{event}",
        description="Events committed to the outbox and not yet published",
    )
    for attr, what in (
        ("pending", "Messages in the stream not yet delivered to the consumer"),
        ("ack_pending", "Messages delivered to the consumer and not yet acknowledged"),
        ("redelivered", "Unacknowledged messages delivered more than once"),
    ):
        meter.create_observable_gauge(
            f"billing.consumer.{attr}", [_lag_gauge(attr)], unit="{message}", description=what
        )
    meter.create_observable_gauge(
        "billing.db.pool.in_use",
        [_pool("checkedout")],
        unit="{connection}",
        description="Database connections checked out of the pool",
    )
    meter.create_observable_gauge(
        "billing.db.pool.size",
        [_pool("size")],
        unit="{connection}",
        description="Database connections the pool keeps (overflow comes on top)",
    )
    _instruments_created = True
