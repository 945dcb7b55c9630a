"""Payments: provider customers, payment methods, the invoice projection,
payments, attempts, refunds, the provider-event inbox and the sync cursor.

A frozen snapshot: later changes to repository/tables.py get their own revision.

Revision ID: 9a7e1f000002
Revises: 9a7e1f000001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit.migrations import migration_schema

revision = "9a7e1f000002"
down_revision = "9a7e1f000001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
TABLES = (
    "sync_state",
    "provider_event",
    "refund",
    "payment_attempt",
    "payment",
    "invoice",
    "payment_method",
    "customer",
)


def _text(name: str, default: bool = False) -> sa.Column[str]:
    if default:
        return sa.Column(name, sa.Text(), server_default=sa.text("''"), nullable=False)
    return sa.Column(name, sa.Text(), nullable=False)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "customer",
        _text("org_id"),
        _text("provider"),
        _text("provider_customer_id"),
        sa.Column("create_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_customer"),
        sa.UniqueConstraint("provider_customer_id", name="uq_customer_provider_customer_id"),
        schema=schema,
    )
    op.create_table(
        "payment_method",
        _text("payment_method_id"),
        _text("org_id"),
        _text("provider"),
        _text("provider_payment_method_id"),
        _text("type"),
        _text("brand", True),
        _text("last4", True),
        sa.Column("exp_month", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("exp_year", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _text("country", True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("detached_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("payment_method_id", name="pk_payment_method"),
        sa.UniqueConstraint(
            "provider_payment_method_id", name="uq_payment_method_provider_payment_method_id"
        ),
        schema=schema,
    )
    op.create_index("ix_payment_method_org_id", "payment_method", ["org_id"], schema=schema)
    op.create_index(
        "uq_payment_method_default",
        "payment_method",
        ["org_id"],
        unique=True,
        postgresql_where=sa.text("is_default AND detached_time IS NULL"),
        schema=schema,
    )
    op.create_table(
        "invoice",
        _text("invoice_id"),
        _text("org_id"),
        _text("subscription_id"),
        _text("number"),
        _text("currency_code"),
        sa.Column("amount_due_minor", sa.BigInteger(), nullable=False),
        _text("state"),
        _text("description", True),
        sa.Column("update_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", name="pk_invoice"),
        schema=schema,
    )
    op.create_index("ix_invoice_org_id", "invoice", ["org_id"], schema=schema)
    op.create_table(
        "payment",
        _text("payment_id"),
        _text("org_id"),
        _text("invoice_id"),
        _text("invoice_number"),
        _text("subscription_id"),
        _text("currency_code"),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column(
            "amount_refunded_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        _text("state"),
        sa.Column("action_reason", sa.Text(), nullable=True),
        sa.Column("attempt_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("retries_used", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_retry_time", TZ, nullable=True),
        _text("payment_method_id", True),
        _text("provider", True),
        _text("provider_payment_intent_id", True),
        _text("failure_code", True),
        _text("failure_message", True),
        _text("dispute_id", True),
        sa.Column(
            "dispute_amount_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        _text("dispute_reason", True),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.Column("succeed_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("payment_id", name="pk_payment"),
        sa.UniqueConstraint("invoice_id", name="uq_payment_invoice_id"),
        schema=schema,
    )
    op.create_index("ix_payment_org_id", "payment", ["org_id"], schema=schema)
    op.create_index(
        "ix_payment_state_next_retry_time", "payment", ["state", "next_retry_time"], schema=schema
    )
    op.create_index(
        "ix_payment_create_time", "payment", ["create_time", "payment_id"], schema=schema
    )
    op.create_table(
        "payment_attempt",
        _text("attempt_id"),
        _text("payment_id"),
        _text("invoice_id"),
        _text("org_id"),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        _text("trigger"),
        _text("state"),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        _text("currency_code"),
        _text("payment_method_id"),
        _text("provider"),
        _text("provider_payment_method_id"),
        _text("provider_customer_id"),
        sa.Column("provider_payment_intent_id", sa.Text(), nullable=True),
        _text("idempotency_key"),
        _text("failure_code", True),
        _text("failure_message", True),
        sa.Column("final_attempt", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("dispatched", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("lease_until", TZ, nullable=True),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("complete_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_payment_attempt"),
        sa.UniqueConstraint(
            "provider_payment_intent_id", name="uq_payment_attempt_provider_payment_intent_id"
        ),
        sa.UniqueConstraint("idempotency_key", name="uq_payment_attempt_idempotency_key"),
        sa.UniqueConstraint(
            "payment_id", "attempt_number", name="uq_payment_attempt_payment_id_attempt_number"
        ),
        schema=schema,
    )
    op.create_index(
        "ix_payment_attempt_undispatched",
        "payment_attempt",
        ["create_time"],
        postgresql_where=sa.text("NOT dispatched"),
        schema=schema,
    )
    op.create_table(
        "refund",
        _text("refund_id"),
        _text("payment_id"),
        _text("org_id"),
        _text("invoice_id"),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        _text("currency_code"),
        _text("state"),
        _text("reason", True),
        _text("credit_memo_id", True),
        sa.Column("provider_refund_id", sa.Text(), nullable=True),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("complete_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("refund_id", name="pk_refund"),
        sa.UniqueConstraint("provider_refund_id", name="uq_refund_provider_refund_id"),
        schema=schema,
    )
    op.create_index("ix_refund_payment_id", "refund", ["payment_id"], schema=schema)
    op.create_index("ix_refund_org_id", "refund", ["org_id"], schema=schema)
    op.create_table(
        "provider_event",
        _text("event_id"),
        _text("provider"),
        _text("kind"),
        sa.Column("created", TZ, nullable=False),
        _text("source"),
        sa.Column("receive_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_provider_event"),
        schema=schema,
    )
    op.create_table(
        "sync_state",
        _text("name"),
        sa.Column("cursor_time", TZ, nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_sync_state"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    for table in TABLES:
        op.drop_table(table, schema=schema)
