"""A subscription's external id (the org's own id for it, e.g. Lago's
external_subscription_id), unique per org among subscriptions not canceled.

Revision ID: 5b0a1f000004
Revises: 5b0a1f000003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit.migrations import migration_schema

revision = "5b0a1f000004"
down_revision = "5b0a1f000003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = migration_schema()
    op.add_column(
        "subscription",
        sa.Column("external_id", sa.Text(), nullable=False, server_default=""),
        schema=schema,
    )
    op.create_index(
        "uq_subscription_org_external_id_live",
        "subscription",
        ["org_id", "external_id"],
        unique=True,
        postgresql_where=sa.text("state <> 'canceled' AND external_id <> ''"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("uq_subscription_org_external_id_live", "subscription", schema=schema)
    op.drop_column("subscription", "external_id", schema=schema)
