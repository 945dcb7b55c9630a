"""SQL for the usage schema: tables, the bulk ingestion path, projections, reads.

``metadata`` is what the kit's migrations and runtime look up here.
"""

from services.usage.repository.tables import (
    SCHEMA,
    aggregate_unique_value_table,
    billing_period_table,
    feature_threshold_table,
    metadata,
    metric_table,
    rejected_event_table,
    subscription_table,
    threshold_crossing_table,
    usage_aggregate_table,
    usage_event_table,
)

__all__ = [
    "SCHEMA",
    "aggregate_unique_value_table",
    "billing_period_table",
    "feature_threshold_table",
    "metadata",
    "metric_table",
    "rejected_event_table",
    "subscription_table",
    "threshold_crossing_table",
    "usage_aggregate_table",
    "usage_event_table",
]
