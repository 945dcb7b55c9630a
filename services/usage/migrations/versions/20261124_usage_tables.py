"""Usage tables: raw events, aggregates, distinct values, projections.

Revision ID: 0a9e1f000301
Revises: 0a9e1f000001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.kit.migrations import migration_schema

revision = "0a9e1f000301"
down_revision = "0a9e1f000001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "metric",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("metric_id", sa.Text(), nullable=False),
        sa.Column("aggregation", sa.Text(), nullable=False),
        sa.Column("property_key", sa.Text(), server_default="", nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("source_update_time", TZ, nullable=True),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_metric"),
        schema=schema,
    )
    op.create_table(
        "subscription",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("package_version_id", sa.Text(), server_default="", nullable=False),
        sa.Column("current_period_start", TZ, nullable=True),
        sa.Column("current_period_end", TZ, nullable=True),
        sa.Column("pause_time", TZ, nullable=True),
        sa.Column("end_time", TZ, nullable=True),
        sa.Column("source_update_time", TZ, nullable=True),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_subscription"),
        schema=schema,
    )
    op.create_index("ix_subscription_org_id", "subscription", ["org_id"], schema=schema)
    op.create_table(
        "billing_period",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("period_end", TZ, nullable=False),
        sa.Column("closed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("close_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("subscription_id", "period_start", name="pk_billing_period"),
        schema=schema,
    )
    op.create_table(
        "usage_event",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("event_time", TZ, nullable=False),
        sa.Column("value", sa.Numeric(), nullable=True),
        sa.Column("unique_value", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("received_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "idempotency_key", name="pk_usage_event"),
        schema=schema,
    )
    op.create_index(
        "ix_usage_event_org_id_event_time", "usage_event", ["org_id", "event_time"], schema=schema
    )
    op.create_index(
        "ix_usage_event_subscription_id_metric_code_period_start",
        "usage_event",
        ["subscription_id", "metric_code", "period_start", "event_time"],
        schema=schema,
    )
    op.create_table(
        "usage_aggregate",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("aggregation", sa.Text(), nullable=False),
        sa.Column("period_end", TZ, nullable=False),
        sa.Column("value", sa.Numeric(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("latest_time", TZ, nullable=True),
        sa.Column("latest_key", sa.Text(), nullable=True),
        sa.Column("frozen", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("emitted_revision", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("emitted_at", TZ, nullable=True),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint(
            "subscription_id", "metric_code", "period_start", name="pk_usage_aggregate"
        ),
        schema=schema,
    )
    op.create_index(
        "ix_usage_aggregate_unemitted",
        "usage_aggregate",
        ["subscription_id"],
        schema=schema,
        postgresql_where=sa.text("revision > emitted_revision"),
    )
    op.create_table(
        "aggregate_unique_value",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "subscription_id",
            "metric_code",
            "period_start",
            "value",
            name="pk_aggregate_unique_value",
        ),
        schema=schema,
    )
    op.create_table(
        "feature_threshold",
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("feature_key", sa.Text(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("package_version_id", "feature_key", name="pk_feature_threshold"),
        schema=schema,
    )
    op.create_table(
        "threshold_crossing",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("feature_key", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Numeric(), nullable=False),
        sa.Column("crossed_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint(
            "subscription_id",
            "metric_code",
            "period_start",
            "feature_key",
            name="pk_threshold_crossing",
        ),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_table("threshold_crossing", schema=schema)
    op.drop_table("feature_threshold", schema=schema)
    op.drop_table("aggregate_unique_value", schema=schema)
    op.drop_index("ix_usage_aggregate_unemitted", table_name="usage_aggregate", schema=schema)
    op.drop_table("usage_aggregate", schema=schema)
    op.drop_index(
        "ix_usage_event_subscription_id_metric_code_period_start",
        table_name="usage_event",
        schema=schema,
    )
    op.drop_index("ix_usage_event_org_id_event_time", table_name="usage_event", schema=schema)
    op.drop_table("usage_event", schema=schema)
    op.drop_table("billing_period", schema=schema)
    op.drop_index("ix_subscription_org_id", table_name="subscription", schema=schema)
    op.drop_table("subscription", schema=schema)
    op.drop_table("metric", schema=schema)
