"""Metric aliases: other event names a metric answers to (issue 20's dialects).

Revision ID: c0a1f0000004
Revises: c0a1f0000003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from services.kit.migrations import migration_schema

revision = "c0a1f0000004"
down_revision = "c0a1f0000003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "metric",
        sa.Column("aliases", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        schema=migration_schema(),
    )


def downgrade() -> None:
    op.drop_column("metric", "aliases", schema=migration_schema())
