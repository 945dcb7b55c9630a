"""Every rejection is counted in billing.usage.dropped{reason} and logged."""

from __future__ import annotations

import logging

import pytest

from services.usage.domain import RejectionReason
from services.usage.handlers.ingest import BatchOutcome, EventResult, EventStatus, report_drops
from tests.support.metrics import local_samples, value


def test_each_rejection_is_counted_by_reason_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # The meter provider is process-wide (set once, by whichever test or
    # service came first), so the test reads the counters' increase.
    before = local_samples()
    outcome = BatchOutcome(
        [
            EventResult(0, "ok", EventStatus.ACCEPTED, org_id="o"),
            EventResult(1, "dup", EventStatus.DUPLICATE, org_id="o"),
            EventResult(2, "e2", EventStatus.REJECTED, RejectionReason.UNKNOWN_METRIC, "m", "o"),
            EventResult(3, "e3", EventStatus.REJECTED, RejectionReason.UNKNOWN_METRIC, "m", "o"),
            EventResult(4, "e4", EventStatus.REJECTED, RejectionReason.PERIOD_CLOSED, "p", "o"),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="services.usage.ingest"):
        report_drops(outcome)
    after = local_samples()
    dropped = "billing_usage_dropped_total"
    increase = {
        reason: value(after, dropped, reason=reason) - value(before, dropped, reason=reason)
        for reason in ("UNKNOWN_METRIC", "PERIOD_CLOSED", "NO_ACTIVE_SUBSCRIPTION")
    }
    assert increase == {"UNKNOWN_METRIC": 2, "PERIOD_CLOSED": 1, "NO_ACTIVE_SUBSCRIPTION": 0}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[2].startswith("billing_usage_event_drop reason=PERIOD_CLOSED event_id=e4")
    assert caplog.records[0].event_id == "e2"  # type: ignore[attr-defined]


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class _Wrapped(Exception):
    def __init__(self, orig: BaseException) -> None:
        super().__init__("wrapped")
        self.orig = orig


def test_only_deadlocks_and_serialization_failures_are_retried() -> None:
    from services.usage.ingestor import retryable

    assert retryable(_PgError("40P01"))
    assert retryable(_Wrapped(_PgError("40001")))
    cause = RuntimeError("adapted")
    cause.__cause__ = _PgError("40P01")
    assert retryable(_Wrapped(cause))
    assert not retryable(_PgError("23505"))
    assert not retryable(ValueError("nope"))
