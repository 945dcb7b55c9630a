"""The catalog's tables (SQLAlchemy 2 Core), in the service's ``metadata``.

Charges are rows (not JSON inside the version) so a foreign key keeps every
charged metric real and "which published versions use this metric" is one
indexed query; feature limits are JSONB on the version because nothing joins
on them but the metric code. The migration
``20261124_catalog_tables.py`` is the frozen DDL of these declarations.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.kit.tables import service_metadata

SCHEMA = "catalog"
metadata = service_metadata(SCHEMA)

TS = DateTime(timezone=True)

metric_table = Table(
    "metric",
    metadata,
    Column("metric_id", Text, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("aggregation", Text, nullable=False),
    Column("property_key", Text, nullable=False, server_default=""),
    Column("rounding_function", Text, nullable=True),
    Column("rounding_precision", Integer, nullable=True),
    Column("state", Text, nullable=False),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
    Column("archive_time", TS, nullable=True),
    Column("aliases", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    CheckConstraint("state IN ('active', 'archived')", name="state"),
)

package_table = Table(
    "package",
    metadata,
    Column("package_id", Text, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("state", Text, nullable=False),
    # The latest published version: what GetPackage shows and new subscriptions get.
    Column("published_version_id", Text, nullable=True),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
    Column("archive_time", TS, nullable=True),
    CheckConstraint("state IN ('draft', 'active', 'archived')", name="state"),
)

version_table = Table(
    "package_version",
    metadata,
    Column("package_version_id", Text, primary_key=True),
    Column("package_id", Text, ForeignKey("package.package_id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("currency_code", Text, nullable=False),
    Column("billing_interval", Text, nullable=False),
    Column("base_fee_amount", Numeric, nullable=False),
    Column("base_fee_timing", Text, nullable=False),
    Column("trial_days", Integer, nullable=False),
    Column("feature_limits", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
    Column("publish_time", TS, nullable=True),
    UniqueConstraint("package_id", "version"),
    CheckConstraint("state IN ('draft', 'published')", name="state"),
    # At most one draft per package, whatever two concurrent editors do.
    Index(
        "uq_package_version_one_draft",
        "package_id",
        unique=True,
        postgresql_where=text("state = 'draft'"),
    ),
)

charge_table = Table(
    "charge",
    metadata,
    Column(
        "package_version_id",
        Text,
        ForeignKey("package_version.package_version_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("position", Integer, nullable=False),
    Column("charge_id", Text, nullable=False),
    Column("metric_id", Text, ForeignKey("metric.metric_id"), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("minimum_amount", Numeric, nullable=True),
    PrimaryKeyConstraint("package_version_id", "position"),
    UniqueConstraint("package_version_id", "metric_id"),
    Index("ix_charge_metric_id", "metric_id"),
)
