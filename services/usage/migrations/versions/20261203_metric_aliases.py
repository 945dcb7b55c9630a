"""The metric projection keeps the catalog's aliases, so ingestion resolves them.

Revision ID: 0a9e1f000305
Revises: 0a9e1f000304
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from services.kit.migrations import migration_schema

revision = "0a9e1f000305"
down_revision = "0a9e1f000304"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = migration_schema()
    op.add_column(
        "metric",
        sa.Column("aliases", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        schema=schema,
    )
    # Ingestion looks codes up by alias too (aliases && the batch's codes).
    op.create_index(
        "ix_metric_aliases", "metric", ["aliases"], postgresql_using="gin", schema=schema
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("ix_metric_aliases", "metric", schema=schema)
    op.drop_column("metric", "aliases", schema=schema)
