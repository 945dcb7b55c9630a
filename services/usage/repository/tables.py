"""The usage schema's tables (SQLAlchemy Core on the kit's metadata).

Raw events and aggregates are owned here; ``metric``, ``subscription`` and
``billing_period`` are local projections of catalog and subscriptions events,
so ingestion never calls another service.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.kit.tables import service_metadata

SCHEMA = "usage"
metadata = service_metadata(SCHEMA)

metric_table = Table(
    "metric",
    metadata,
    Column("code", Text, primary_key=True),
    Column("metric_id", Text, nullable=False),
    Column("aggregation", Text, nullable=False),
    Column("property_key", Text, nullable=False, server_default=""),
    Column("active", Boolean, nullable=False),
    # Other codes events may use for this metric (the catalog keeps them unique
    # among live metrics).
    Column("aliases", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # The catalog's update_time: an older event never overwrites a newer one.
    Column("source_update_time", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_metric_aliases", "aliases", postgresql_using="gin"),
)

subscription_table = Table(
    "subscription",
    metadata,
    Column("subscription_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("package_version_id", Text, nullable=False, server_default=""),
    Column("current_period_start", DateTime(timezone=True), nullable=True),
    Column("current_period_end", DateTime(timezone=True), nullable=True),
    Column("pause_time", DateTime(timezone=True), nullable=True),
    Column("end_time", DateTime(timezone=True), nullable=True),
    Column("external_id", Text, nullable=False, server_default=""),
    Column("source_update_time", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_subscription_org_id", "org_id"),
)

billing_period_table = Table(
    "billing_period",
    metadata,
    Column("subscription_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("org_id", Text, nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    # Ingestion holds FOR KEY SHARE on the open periods it writes into and the
    # close takes FOR UPDATE, so no event slips into a period being frozen.
    Column("closed", Boolean, nullable=False, server_default=text("false")),
    Column("close_time", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("subscription_id", "period_start"),
)

usage_event_table = Table(
    "usage_event",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("metric_code", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("value", Numeric, nullable=True),  # NULL for count and unique_count
    Column("unique_value", Text, nullable=True),  # the property unique_count counts
    Column("properties", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The exactly-once key: whoever inserts first counts, everyone else is a duplicate.
    PrimaryKeyConstraint("org_id", "idempotency_key"),
    Index("ix_usage_event_org_id_event_time", "org_id", "event_time"),
    Index(
        "ix_usage_event_subscription_id_metric_code_period_start",
        "subscription_id",
        "metric_code",
        "period_start",
        "event_time",
    ),
)

usage_aggregate_table = Table(
    "usage_aggregate",
    metadata,
    Column("subscription_id", Text, nullable=False),
    Column("metric_code", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("org_id", Text, nullable=False),
    Column("aggregation", Text, nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("value", Numeric, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    # (latest_time, latest_key) of the latest event: LATEST's tie-break.
    Column("latest_time", DateTime(timezone=True), nullable=True),
    Column("latest_key", Text, nullable=True),
    Column("frozen", Boolean, nullable=False, server_default=text("false")),
    # Bumped by every change; the throttled emitter publishes when it moved
    # past emitted_revision, at most once per interval (emitted_at).
    Column("revision", BigInteger, nullable=False, server_default=text("1")),
    Column("emitted_revision", BigInteger, nullable=False, server_default=text("0")),
    Column("emitted_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("subscription_id", "metric_code", "period_start"),
    Index(
        "ix_usage_aggregate_unemitted",
        "subscription_id",
        postgresql_where=text("revision > emitted_revision"),
    ),
)

aggregate_unique_value_table = Table(
    "aggregate_unique_value",
    metadata,
    Column("subscription_id", Text, nullable=False),
    Column("metric_code", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("subscription_id", "metric_code", "period_start", "value"),
)

feature_threshold_table = Table(
    "feature_threshold",
    metadata,
    # From the catalog's published versions: a metered feature limit on a
    # metric is an alert threshold for subscriptions pinning that version.
    Column("package_version_id", Text, nullable=False),
    Column("feature_key", Text, nullable=False),
    Column("metric_code", Text, nullable=False),
    Column("threshold", Numeric, nullable=False),
    PrimaryKeyConstraint("package_version_id", "feature_key"),
)

threshold_crossing_table = Table(
    "threshold_crossing",
    metadata,
    # One row per threshold crossed per period: the event goes out once.
    Column("subscription_id", Text, nullable=False),
    Column("metric_code", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("feature_key", Text, nullable=False),
    Column("threshold", Numeric, nullable=False),
    Column("crossed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("subscription_id", "metric_code", "period_start", "feature_key"),
)

api_key_table = Table(
    "api_key",
    metadata,
    # Only the secret's SHA-256 digest is kept: the secret is shown once, at creation.
    Column("key_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("secret_sha256", LargeBinary, nullable=False, unique=True),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("revoke_time", DateTime(timezone=True), nullable=True),
    Index("ix_api_key_org_id_create_time", "org_id", "create_time"),
)

rejected_event_table = Table(
    "rejected_event",
    metadata,
    # Increasing in insert order: the feed's page order and the announcer's.
    Column("rejected_event_id", BigInteger, Identity(), primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    # The key, or a hash of the payload when the key is invalid (domain.rejections).
    Column("dedupe_key", Text, nullable=False),
    Column("metric_code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=True),
    Column("rejected_at", DateTime(timezone=True), nullable=False),
    # Set by the periodic job once usage.event_rejected carried the row.
    Column("announced", Boolean, nullable=False, server_default=text("false")),
    # A retried rejection is stored once.
    UniqueConstraint("org_id", "dedupe_key", "reason", name="uq_rejected_event_dedupe"),
    Index("ix_rejected_event_org_id_id", "org_id", "rejected_event_id"),
    Index(
        "ix_rejected_event_unannounced",
        "rejected_event_id",
        postgresql_where=text("NOT announced"),
    ),
)
