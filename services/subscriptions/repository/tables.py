"""Tables of the subscriptions schema (SQLAlchemy 2 Core), on the service's metadata.

The local catalog projection (package, package_version, feature_limit),
subscriptions with their schedule entries, closed periods (the billing
clock's exactly-once guard), the usage projection feeding entitlement checks
and the billing clock's high-water mark. Migrations are frozen copies of
these: a change here needs a new revision.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.kit.tables import service_metadata

SCHEMA = "subscriptions"
metadata = service_metadata(SCHEMA)

package_table = Table(
    "package",
    metadata,
    Column("package_id", Text, primary_key=True),
    Column("package_code", Text, nullable=False),
    Column("archived", Boolean, nullable=False, server_default=text("false")),
    Column("latest_version_id", Text, nullable=True),
    Column("latest_version", Integer, nullable=False, server_default=text("0")),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

package_version_table = Table(
    "package_version",
    metadata,
    Column("package_version_id", Text, primary_key=True),
    Column("package_id", Text, nullable=False, index=True),
    Column("package_code", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("billing_interval", Text, nullable=False),
    Column("base_fee", Numeric, nullable=False),
    Column("base_fee_timing", Text, nullable=False),
    Column("trial_days", Integer, nullable=False),
    Column("metric_codes", ARRAY(Text), nullable=False),
    Column("publish_time", DateTime(timezone=True), nullable=True),
)

feature_limit_table = Table(
    "feature_limit",
    metadata,
    Column("package_version_id", Text, nullable=False),
    Column("feature_key", Text, nullable=False),
    Column("unlimited", Boolean, nullable=False),
    Column("limit_value", Numeric, nullable=True),
    Column("hard", Boolean, nullable=False),
    Column("resets_each_period", Boolean, nullable=False),
    Column("metric_code", Text, nullable=False),
    PrimaryKeyConstraint("package_version_id", "feature_key"),
)

subscription_table = Table(
    "subscription",
    metadata,
    Column("subscription_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("package_id", Text, nullable=False),
    Column("package_version_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("billing_anchor", Text, nullable=False),
    Column("origin_time", DateTime(timezone=True), nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("trial_end_time", DateTime(timezone=True), nullable=True),
    Column("current_period_start", DateTime(timezone=True), nullable=False),
    Column("current_period_end", DateTime(timezone=True), nullable=False),
    Column("allow_multiple", Boolean, nullable=False),
    Column("external_id", Text, nullable=False, server_default=""),
    Column("cancel_time", DateTime(timezone=True), nullable=True),
    Column("cancel_reason", Text, nullable=False, server_default=""),
    Column("pause_time", DateTime(timezone=True), nullable=True),
    # Marks of the current period only: reset at each rollover, so bounded.
    Column("period_marks", JSONB, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    # One live subscription per org and package unless explicitly allowed;
    # the database, not a prior SELECT, is what makes it true under races.
    Index(
        "uq_subscription_org_package_live",
        "org_id",
        "package_id",
        unique=True,
        postgresql_where=text("state <> 'canceled' AND NOT allow_multiple"),
    ),
    # Usage events may name a subscription by it: one meaning per org.
    Index(
        "uq_subscription_org_external_id_live",
        "org_id",
        "external_id",
        unique=True,
        postgresql_where=text("state <> 'canceled' AND external_id <> ''"),
    ),
    Index("ix_subscription_org_id_state", "org_id", "state"),
    Index(
        "ix_subscription_due",
        "current_period_end",
        postgresql_where=text("state <> 'canceled'"),
    ),
    Index("ix_subscription_create_time", "create_time", "subscription_id"),
)

schedule_table = Table(
    "schedule_entry",
    metadata,
    Column("schedule_id", Text, primary_key=True),
    Column("subscription_id", Text, nullable=False, index=True),
    Column("org_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target_package_version_id", Text, nullable=False),
    Column("direction", Text, nullable=True),
    Column("effective_time", DateTime(timezone=True), nullable=False),
    Column("state", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("resolve_time", DateTime(timezone=True), nullable=True),
    Index(
        "uq_schedule_entry_pending",
        "subscription_id",
        "action",
        unique=True,
        postgresql_where=text("state = 'pending'"),
    ),
)

closed_period_table = Table(
    "closed_period",
    metadata,
    Column("subscription_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("org_id", Text, nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("package_version_id", Text, nullable=False),
    Column("segments", JSONB, nullable=False),
    Column("close_time", DateTime(timezone=True), nullable=False),
    # The billing clock's exactly-once guarantee: one row per subscription
    # and period, whoever (replica, retry, concurrent run) gets there first.
    PrimaryKeyConstraint("subscription_id", "period_start"),
)

usage_aggregate_table = Table(
    "usage_aggregate",
    metadata,
    Column("subscription_id", Text, nullable=False),
    Column("metric_code", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("org_id", Text, nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("value", Numeric, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("subscription_id", "metric_code", "period_start"),
)

billing_clock_table = Table(
    "billing_clock",
    metadata,
    Column("clock_id", SmallInteger, primary_key=True),
    Column("now", DateTime(timezone=True), nullable=True),
)

LIVE_UNIQUE_INDEX = "uq_subscription_org_package_live"
EXTERNAL_ID_UNIQUE_INDEX = "uq_subscription_org_external_id_live"
