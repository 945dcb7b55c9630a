"""Metric views the usage domain's unit tests validate events against: one
of each aggregation, a property-keyed one and an archived one."""

from __future__ import annotations

from services.usage.domain import Aggregation, MetricView

METRICS = {
    "calls": MetricView("calls", Aggregation.COUNT),
    "bytes": MetricView("bytes", Aggregation.SUM, "bytes"),
    "seats": MetricView("seats", Aggregation.MAX),
    "users": MetricView("users", Aggregation.UNIQUE_COUNT, "user_id"),
    "balance": MetricView("balance", Aggregation.LATEST),
    "old": MetricView("old", Aggregation.COUNT, active=False),
}
