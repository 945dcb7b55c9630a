"""SQL for the subscriptions schema (SQLAlchemy 2 async): tables and repository."""

from services.subscriptions.repository.projections import EntitlementRow, VersionRecord
from services.subscriptions.repository.store import (
    SubscriptionsRepository,
    SubscriptionsUnitOfWork,
    segments_from_json,
    segments_json,
)
from services.subscriptions.repository.tables import (
    LIVE_UNIQUE_INDEX,
    SCHEMA,
    billing_clock_table,
    closed_period_table,
    feature_limit_table,
    metadata,
    package_table,
    package_version_table,
    schedule_table,
    subscription_table,
    usage_aggregate_table,
)

__all__ = [
    "LIVE_UNIQUE_INDEX",
    "SCHEMA",
    "EntitlementRow",
    "SubscriptionsRepository",
    "SubscriptionsUnitOfWork",
    "VersionRecord",
    "billing_clock_table",
    "closed_period_table",
    "feature_limit_table",
    "metadata",
    "package_table",
    "package_version_table",
    "schedule_table",
    "segments_from_json",
    "segments_json",
    "subscription_table",
    "usage_aggregate_table",
]
