"""Invoicing: immediate plan changes, so the open period's segments are known
before its period_closed event (PreviewInvoice, RunBilling).

A frozen snapshot of ``plan_change`` in repository/tables.py.

Revision ID: 1e0a1f000003
Revises: 1e0a1f000002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit.migrations import migration_schema

revision = "1e0a1f000003"
down_revision = "1e0a1f000002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plan_change",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("effective_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_package_version_id", sa.Text(), nullable=False),
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "effective_time", name="pk_plan_change"),
        schema=migration_schema(),
    )


def downgrade() -> None:
    op.drop_table("plan_change", schema=migration_schema())
