"""The subscription projection keeps the external id, so ingestion resolves it.

Revision ID: 0a9e1f000306
Revises: 0a9e1f000305
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit.migrations import migration_schema

revision = "0a9e1f000306"
down_revision = "0a9e1f000305"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscription",
        sa.Column("external_id", sa.Text(), nullable=False, server_default=""),
        schema=migration_schema(),
    )


def downgrade() -> None:
    op.drop_column("subscription", "external_id", schema=migration_schema())
