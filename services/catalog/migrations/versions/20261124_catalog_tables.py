"""Catalog tables: metric, package, package_version, charge.

A frozen snapshot of the tables as of this revision (explicit DDL, not
``metadata.create_all``), so later changes to repository.py never rewrite
history.

Revision ID: c0a1f0000002
Revises: c0a1f0000001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from services.kit.migrations import migration_schema

revision = "c0a1f0000002"
down_revision = "c0a1f0000001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "metric",
        sa.Column("metric_id", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("aggregation", sa.Text(), nullable=False),
        sa.Column("property_key", sa.Text(), server_default="", nullable=False),
        sa.Column("rounding_function", sa.Text(), nullable=True),
        sa.Column("rounding_precision", sa.Integer(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.Column("archive_time", TS, nullable=True),
        sa.CheckConstraint("state IN ('active', 'archived')", name="ck_metric_state"),
        sa.PrimaryKeyConstraint("metric_id", name="pk_metric"),
        sa.UniqueConstraint("code", name="uq_metric_code"),
        schema=schema,
    )
    op.create_table(
        "package",
        sa.Column("package_id", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("published_version_id", sa.Text(), nullable=True),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.Column("archive_time", TS, nullable=True),
        sa.CheckConstraint("state IN ('draft', 'active', 'archived')", name="ck_package_state"),
        sa.PrimaryKeyConstraint("package_id", name="pk_package"),
        sa.UniqueConstraint("code", name="uq_package_code"),
        schema=schema,
    )
    op.create_table(
        "package_version",
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("package_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("billing_interval", sa.Text(), nullable=False),
        sa.Column("base_fee_amount", sa.Numeric(), nullable=False),
        sa.Column("base_fee_timing", sa.Text(), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("feature_limits", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.Column("publish_time", TS, nullable=True),
        sa.CheckConstraint("state IN ('draft', 'published')", name="ck_package_version_state"),
        sa.ForeignKeyConstraint(
            ["package_id"],
            [f"{schema}.package.package_id"],
            name="fk_package_version_package_id_package",
        ),
        sa.PrimaryKeyConstraint("package_version_id", name="pk_package_version"),
        sa.UniqueConstraint("package_id", "version", name="uq_package_version_package_id_version"),
        schema=schema,
    )
    op.create_index(
        "uq_package_version_one_draft",
        "package_version",
        ["package_id"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("state = 'draft'"),
    )
    op.create_table(
        "charge",
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("charge_id", sa.Text(), nullable=False),
        sa.Column("metric_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("properties", JSONB(), nullable=False),
        sa.Column("minimum_amount", sa.Numeric(), nullable=True),
        sa.ForeignKeyConstraint(
            ["package_version_id"],
            [f"{schema}.package_version.package_version_id"],
            name="fk_charge_package_version_id_package_version",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["metric_id"], [f"{schema}.metric.metric_id"], name="fk_charge_metric_id_metric"
        ),
        sa.PrimaryKeyConstraint("package_version_id", "position", name="pk_charge"),
        sa.UniqueConstraint(
            "package_version_id", "metric_id", name="uq_charge_package_version_id_metric_id"
        ),
        schema=schema,
    )
    op.create_index("ix_charge_metric_id", "charge", ["metric_id"], schema=schema)


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("ix_charge_metric_id", table_name="charge", schema=schema)
    op.drop_table("charge", schema=schema)
    op.drop_index("uq_package_version_one_draft", table_name="package_version", schema=schema)
    op.drop_table("package_version", schema=schema)
    op.drop_table("package", schema=schema)
    op.drop_table("metric", schema=schema)
