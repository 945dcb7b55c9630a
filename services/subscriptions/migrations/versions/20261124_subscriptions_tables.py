"""Subscriptions: catalog projection, subscriptions, schedules, closed periods,
usage projection and the billing clock.

A frozen snapshot: later changes to repository.py get their own revision.

Revision ID: 5b0a1f000002
Revises: 5b0a1f000001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.kit.migrations import migration_schema

revision = "5b0a1f000002"
down_revision = "5b0a1f000001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "package",
        sa.Column("package_id", sa.Text(), nullable=False),
        sa.Column("package_code", sa.Text(), nullable=False),
        sa.Column("archived", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("latest_version_id", sa.Text(), nullable=True),
        sa.Column("latest_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("update_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("package_id", name="pk_package"),
        schema=schema,
    )
    op.create_table(
        "package_version",
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("package_id", sa.Text(), nullable=False),
        sa.Column("package_code", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("billing_interval", sa.Text(), nullable=False),
        sa.Column("base_fee", sa.Numeric(), nullable=False),
        sa.Column("base_fee_timing", sa.Text(), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("metric_codes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("publish_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("package_version_id", name="pk_package_version"),
        schema=schema,
    )
    op.create_index(
        "ix_package_version_package_id", "package_version", ["package_id"], schema=schema
    )
    op.create_table(
        "feature_limit",
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("feature_key", sa.Text(), nullable=False),
        sa.Column("unlimited", sa.Boolean(), nullable=False),
        sa.Column("limit_value", sa.Numeric(), nullable=True),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("resets_each_period", sa.Boolean(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("package_version_id", "feature_key", name="pk_feature_limit"),
        schema=schema,
    )
    op.create_table(
        "subscription",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("package_id", sa.Text(), nullable=False),
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("billing_anchor", sa.Text(), nullable=False),
        sa.Column("origin_time", TZ, nullable=False),
        sa.Column("start_time", TZ, nullable=False),
        sa.Column("trial_end_time", TZ, nullable=True),
        sa.Column("current_period_start", TZ, nullable=False),
        sa.Column("current_period_end", TZ, nullable=False),
        sa.Column("allow_multiple", sa.Boolean(), nullable=False),
        sa.Column("cancel_time", TZ, nullable=True),
        sa.Column("cancel_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("pause_time", TZ, nullable=True),
        sa.Column("period_marks", postgresql.JSONB(), nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_subscription"),
        schema=schema,
    )
    op.create_index(
        "uq_subscription_org_package_live",
        "subscription",
        ["org_id", "package_id"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("state <> 'canceled' AND NOT allow_multiple"),
    )
    op.create_index(
        "ix_subscription_org_id_state", "subscription", ["org_id", "state"], schema=schema
    )
    op.create_index(
        "ix_subscription_due",
        "subscription",
        ["current_period_end"],
        schema=schema,
        postgresql_where=sa.text("state <> 'canceled'"),
    )
    op.create_index(
        "ix_subscription_create_time",
        "subscription",
        ["create_time", "subscription_id"],
        schema=schema,
    )
    op.create_table(
        "schedule_entry",
        sa.Column("schedule_id", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target_package_version_id", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=True),
        sa.Column("effective_time", TZ, nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("resolve_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("schedule_id", name="pk_schedule_entry"),
        schema=schema,
    )
    op.create_index(
        "ix_schedule_entry_subscription_id", "schedule_entry", ["subscription_id"], schema=schema
    )
    op.create_index(
        "uq_schedule_entry_pending",
        "schedule_entry",
        ["subscription_id", "action"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "closed_period",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("period_end", TZ, nullable=False),
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("segments", postgresql.JSONB(), nullable=False),
        sa.Column("close_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "period_start", name="pk_closed_period"),
        schema=schema,
    )
    op.create_table(
        "usage_aggregate",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("period_end", TZ, nullable=False),
        sa.Column("value", sa.Numeric(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("update_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint(
            "subscription_id", "metric_code", "period_start", name="pk_usage_aggregate"
        ),
        schema=schema,
    )
    op.create_table(
        "billing_clock",
        sa.Column("clock_id", sa.SmallInteger(), nullable=False),
        sa.Column("now", TZ, nullable=True),
        sa.PrimaryKeyConstraint("clock_id", name="pk_billing_clock"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    for table in (
        "billing_clock",
        "usage_aggregate",
        "closed_period",
        "schedule_entry",
        "subscription",
        "feature_limit",
        "package_version",
        "package",
    ):
        op.drop_table(table, schema=schema)
