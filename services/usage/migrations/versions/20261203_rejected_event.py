"""The rejection feed: every usage event that did not count, with its reason.

Revision ID: 0a9e1f000304
Revises: 0a9e1f000303 (the ingestion API keys)
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.kit.migrations import migration_schema

revision = "0a9e1f000304"
down_revision = "0a9e1f000303"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "rejected_event",
        sa.Column("rejected_event_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("metric_code", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("event_time", TZ, nullable=True),
        sa.Column("rejected_at", TZ, nullable=False),
        sa.Column("announced", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("rejected_event_id", name="pk_rejected_event"),
        sa.UniqueConstraint("org_id", "dedupe_key", "reason", name="uq_rejected_event_dedupe"),
        schema=schema,
    )
    op.create_index(
        "ix_rejected_event_org_id_id",
        "rejected_event",
        ["org_id", "rejected_event_id"],
        schema=schema,
    )
    op.create_index(
        "ix_rejected_event_unannounced",
        "rejected_event",
        ["rejected_event_id"],
        postgresql_where=sa.text("NOT announced"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("ix_rejected_event_unannounced", table_name="rejected_event", schema=schema)
    op.drop_index("ix_rejected_event_org_id_id", table_name="rejected_event", schema=schema)
    op.drop_table("rejected_event", schema=schema)
