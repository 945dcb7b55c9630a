"""Recording usage events: validate, store once, aggregate, report each outcome.

One call handles a batch in one transaction (the caller commits). A rejected
event never blocks the valid ones beside it: unlike Lago's all-or-nothing
batches, each event gets its own outcome, because product code cannot repair a
batch it has already emitted.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from opentelemetry import metrics

from services.kit.uow import UnitOfWork
from services.usage.domain import (
    BatchValidator,
    IncomingEvent,
    Rejected,
    RejectionReason,
    ValidEvent,
)
from services.usage.domain.external import ExternalIds
from services.usage.domain.rejections import (
    bounded_message,
    dedupe_key,
    rejected_payload,
    stored_key,
)
from services.usage.repository.ingest import existing_keys, load_context, store_events
from services.usage.repository.rejections import RejectionRow, store_rejections
from services.usage.tracelinks import AggregateKey, links_wanted, remember_ingestion

log = logging.getLogger("services.usage.ingest")
_meter = metrics.get_meter("tally.usage")
_dropped = _meter.create_counter(
    "billing.usage.dropped",
    unit="{event}",
    description="Usage events rejected at ingestion, by reason",
)
_processed = _meter.create_counter(
    "billing.usage.processed",
    unit="{event}",
    description="Usage events ingested: accepted (counted now) or duplicate (counted before)",
)

# Batches at least this large are staged with COPY; smaller ones with unnest.
DEFAULT_COPY_THRESHOLD = 64


class EventStatus(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(slots=True)  # one per event: not frozen, see domain.events.IncomingEvent
class EventResult:
    index: int
    idempotency_key: str
    status: EventStatus
    reason: RejectionReason | None = None
    message: str = ""
    org_id: str = ""


@dataclass(frozen=True)
class BatchOutcome:
    results: list[EventResult]
    # The aggregates this batch changed (events stored for the first time).
    touched: frozenset[AggregateKey] = frozenset()

    def count(self, status: EventStatus) -> int:
        return self._counts[status]

    @cached_property
    def _counts(self) -> dict[EventStatus, int]:
        # Asked several times per batch (response, metrics, acks): one pass,
        # with identity tests (Enum.__hash__ is Python code).
        accepted = duplicates = rejected = 0
        for r in self.results:
            status = r.status
            if status is EventStatus.ACCEPTED:
                accepted += 1
            elif status is EventStatus.DUPLICATE:
                duplicates += 1
            else:
                rejected += 1
        return {
            EventStatus.ACCEPTED: accepted,
            EventStatus.DUPLICATE: duplicates,
            EventStatus.REJECTED: rejected,
        }

    @property
    def accepted(self) -> int:
        return self.count(EventStatus.ACCEPTED)

    @property
    def duplicates(self) -> int:
        return self.count(EventStatus.DUPLICATE)

    @property
    def rejected(self) -> int:
        return self.count(EventStatus.REJECTED)


async def record_usage(
    uow: UnitOfWork,
    events: Sequence[IncomingEvent],
    *,
    now: datetime,
    copy_threshold: int = DEFAULT_COPY_THRESHOLD,
) -> BatchOutcome:
    """Store and aggregate a batch; the caller commits, then calls ``report_outcome``."""
    if not events:
        return BatchOutcome([])
    session = uow.session
    context = await load_context(
        session,
        metric_codes=(e.metric_code for e in events),
        org_ids=(e.org_id for e in events),
        subscription_ids=(e.subscription_id for e in events if e.subscription_id),
        earliest=min((e.event_time or now) for e in events),
    )
    results: list[EventResult | None] = [None] * len(events)
    to_store: list[ValidEvent] = []
    stored_at: dict[tuple[str, str], int] = {}
    validate = BatchValidator(
        now=now,
        metrics=context.metrics,
        subscriptions_by_id=context.by_id,
        subscriptions_by_org=context.by_org,
    ).validate
    any_rejected = False
    # Only a batch naming subscriptions by external id pays for the index.
    external = (
        ExternalIds(context.by_org).resolve
        if any(e.external_subscription_id for e in events)
        else None
    )
    for index, event in enumerate(events):
        named = external(event) if external is not None else event
        outcome = named if isinstance(named, Rejected) else validate(named)
        key = (event.org_id, event.idempotency_key)
        if isinstance(outcome, Rejected):
            any_rejected = True
            results[index] = EventResult(
                index,
                event.idempotency_key,
                EventStatus.REJECTED,
                outcome.reason,
                outcome.message,
                event.org_id,
            )
        elif key in stored_at:
            results[index] = EventResult(
                index,
                event.idempotency_key,
                EventStatus.DUPLICATE,
                message=f"same idempotency key as event {stored_at[key]} of this batch",
                org_id=event.org_id,
            )
        else:
            stored_at[key] = index
            to_store.append(outcome)
    already = await store_events(session, to_store, now=now, copy_threshold=copy_threshold)
    accepted, duplicate = EventStatus.ACCEPTED, EventStatus.DUPLICATE
    for key, index in stored_at.items():
        # Positional: keyword arguments made this the costliest line per event.
        status = duplicate if key in already else accepted
        results[index] = EventResult(index, key[1], status, None, "", key[0])
    if any_rejected:  # a clean batch pays nothing for the feed
        await _rejections_already_stored_are_duplicates(uow, results)
        await _keep_rejections(uow, events, results, now)
    touched: frozenset[AggregateKey] = frozenset()
    if links_wanted():  # only for trace links: skipped on the hot path when nobody traces
        touched = frozenset(
            (v.subscription_id, v.metric_code, v.period_start)
            for v in to_store
            if (v.org_id, v.idempotency_key) not in already
        )
    return BatchOutcome([r for r in results if r is not None], touched)


async def _rejections_already_stored_are_duplicates(
    uow: UnitOfWork, results: list[EventResult | None]
) -> None:
    """A retry of an event stored earlier is a duplicate, even if it would fail now.

    E.g. an emitter retrying after its period closed: the event was counted,
    and calling it PERIOD_CLOSED would report a loss that never happened.
    """
    candidates = [
        r
        for r in results
        if r is not None
        and r.status is EventStatus.REJECTED
        and r.reason is not RejectionReason.INVALID_IDEMPOTENCY_KEY
    ]
    if not candidates:
        return
    stored = await existing_keys(uow.session, ((r.org_id, r.idempotency_key) for r in candidates))
    for r in candidates:
        if (r.org_id, r.idempotency_key) in stored:
            results[r.index] = EventResult(
                r.index,
                r.idempotency_key,
                EventStatus.DUPLICATE,
                message="already stored",
                org_id=r.org_id,
            )


async def _keep_rejections(
    uow: UnitOfWork,
    events: Sequence[IncomingEvent],
    results: list[EventResult | None],
    now: datetime,
) -> None:
    """The batch's rejections into the feed: one statement, and none without any."""
    rows: list[RejectionRow] = []
    for r in results:
        if r is None or r.status is not EventStatus.REJECTED or r.reason is None:
            continue
        event = events[r.index]
        payload = rejected_payload(event)
        rows.append(
            RejectionRow(
                event.org_id,
                stored_key(event),
                dedupe_key(event, payload),
                event.metric_code,
                r.reason.value,
                bounded_message(r.message),
                payload,
                event.event_time,
            )
        )
    await store_rejections(uow.session, rows, now=now)


def report_outcome(outcome: BatchOutcome) -> None:
    """Metrics, drop log lines and trace links of a batch; call once, after it committed."""
    for status in (EventStatus.ACCEPTED, EventStatus.DUPLICATE):
        if n := outcome.count(status):
            _processed.add(n, {"status": status.value})
    report_drops(outcome)
    remember_ingestion(outcome.touched)


def report_drops(outcome: BatchOutcome) -> None:
    """Count and log every rejection; call once, after the batch committed."""
    for r in outcome.results:
        if r.status is EventStatus.REJECTED and r.reason is not None:
            _dropped.add(1, {"reason": r.reason.value})
            log.warning(
                "billing_usage_event_drop reason=%s event_id=%s org_id=%s: %s",
                r.reason.value,
                r.idempotency_key,
                r.org_id,
                r.message,
                extra={
                    "reason": r.reason.value,
                    "event_id": r.idempotency_key,
                    "org_id": r.org_id,
                },
            )
