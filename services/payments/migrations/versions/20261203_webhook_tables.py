"""Outbound webhooks: the endpoints orgs register and one delivery per
(event, endpoint) with its retry schedule and last outcome.

A frozen snapshot of their tables in services/payments/repository/tables.py.

Revision ID: 9a7e1f000004
Revises: 9a7e1f000003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from services.kit.migrations import migration_schema

revision = "9a7e1f000004"
down_revision = "9a7e1f000003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _text(name: str, default: bool = False) -> sa.Column[str]:
    if default:
        return sa.Column(name, sa.Text(), server_default=sa.text("''"), nullable=False)
    return sa.Column(name, sa.Text(), nullable=False)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "webhook_endpoint",
        _text("endpoint_id"),
        _text("org_id"),
        _text("url"),
        _text("description", default=True),
        sa.Column("event_types", ARRAY(sa.Text()), nullable=False),
        _text("secret"),
        _text("previous_secret", default=True),
        sa.Column("previous_secret_expire_time", TZ, nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        _text("disabled_reason", default=True),
        sa.Column("failing_since", TZ, nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("create_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("update_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_id", name="pk_webhook_endpoint"),
        schema=schema,
    )
    op.create_index("ix_webhook_endpoint_org_id", "webhook_endpoint", ["org_id"], schema=schema)
    op.create_table(
        "webhook_delivery",
        _text("delivery_id"),
        _text("endpoint_id"),
        _text("org_id"),
        _text("event_id"),
        _text("event_type"),
        _text("payload"),
        _text("state"),
        sa.Column("attempt_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_time", TZ, nullable=True),
        sa.Column("first_attempt_time", TZ, nullable=True),
        sa.Column("last_attempt_time", TZ, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_response_ms", sa.BigInteger(), nullable=True),
        _text("last_error", default=True),
        sa.Column("lease_until", TZ, nullable=True),
        sa.Column("create_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_webhook_delivery"),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_delivery_event_id"),
        schema=schema,
    )
    op.create_index(
        "ix_webhook_delivery_due",
        "webhook_delivery",
        ["next_attempt_time"],
        schema=schema,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_webhook_delivery_endpoint",
        "webhook_delivery",
        ["endpoint_id", "create_time"],
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_table("webhook_delivery", schema=schema)
    op.drop_table("webhook_endpoint", schema=schema)
