"""Running one ingestion batch as its own transaction, retried on deadlock.

Handlers never commit; this is the caller that does, for the gRPC adapter
(and anything else that ingests in-process). A retry is harmless: the unique
key decides again, so it can only turn "accepted" into "accepted", never
count twice. Drops are reported only once the batch committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.kit.clock import Clock
from services.kit.uow import UnitOfWork
from services.usage.handlers.ingest import (
    DEFAULT_COPY_THRESHOLD,
    BatchOutcome,
    record_usage,
    report_outcome,
)
from services.usage.protomap import incoming_events

log = logging.getLogger(__name__)

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock
MAX_ATTEMPTS = 5


def retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure, raw or wrapped by SQLAlchemy."""
    seen: BaseException | None = exc
    for _ in range(5):  # DBAPIError -> adapted error -> asyncpg error
        if seen is None:
            break
        if getattr(seen, "sqlstate", None) in RETRYABLE_SQLSTATES:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


@dataclass
class Ingestor:
    """Runs a batch in its own transaction, retrying on deadlock."""

    uow_factory: Callable[[], UnitOfWork]
    clock: Clock
    copy_threshold: int = DEFAULT_COPY_THRESHOLD

    async def ingest(self, events: Sequence[Any]) -> BatchOutcome:
        """Store a batch of ``UsageEvent`` messages; answers once it committed."""
        incoming = incoming_events(events)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._once(incoming)
            except Exception as exc:
                if attempt == MAX_ATTEMPTS or not retryable(exc):
                    raise
                log.info("usage batch retried after %s (attempt %d)", type(exc).__name__, attempt)
        raise AssertionError("unreachable")

    async def _once(self, incoming: list[Any]) -> BatchOutcome:
        async with self.uow_factory() as uow:
            outcome = await record_usage(
                uow, incoming, now=self.clock.now(), copy_threshold=self.copy_threshold
            )
            await uow.commit()
        report_outcome(outcome)
        return outcome
