"""Ingestion API keys (the gateway's dialect routes authenticate with them).

Revision ID: 0a9e1f000303
Revises: 0a9e1f000302
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit.migrations import migration_schema

revision = "0a9e1f000303"
down_revision = "0a9e1f000302"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "api_key",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("revoke_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_key"),
        sa.UniqueConstraint("secret_sha256", name="uq_api_key_secret_sha256"),
        schema=schema,
    )
    op.create_index(
        "ix_api_key_org_id_create_time", "api_key", ["org_id", "create_time"], schema=schema
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("ix_api_key_org_id_create_time", table_name="api_key", schema=schema)
    op.drop_table("api_key", schema=schema)
