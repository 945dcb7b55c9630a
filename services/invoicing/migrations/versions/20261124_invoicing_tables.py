"""Invoicing: catalog and subscription projections, billing profiles, invoices,
credit memos, credit balances and the per-org invoice number counter.

A frozen snapshot: later changes to repository/tables.py get their own revision.

Revision ID: 1e0a1f000002
Revises: 1e0a1f000001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.kit.migrations import migration_schema

revision = "1e0a1f000002"
down_revision = "1e0a1f000001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
TABLES = (
    "invoice_counter",
    "credit_balance",
    "credit_memo",
    "invoice",
    "billing_profile",
    "subscription",
    "package_version",
)


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "package_version",
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("package_id", sa.Text(), nullable=False),
        sa.Column("package_code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("billing_interval", sa.Text(), nullable=False),
        sa.Column("base_fee", sa.Numeric(), nullable=False),
        sa.Column("base_fee_timing", sa.Text(), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("package_version_id", name="pk_package_version"),
        schema=schema,
    )
    op.create_table(
        "subscription",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("package_version_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("current_period_start", TZ, nullable=True),
        sa.Column("current_period_end", TZ, nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_subscription"),
        schema=schema,
    )
    op.create_index("ix_subscription_org_id", "subscription", ["org_id"], schema=schema)
    op.create_table(
        "billing_profile",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("legal_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "address",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("tax_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("tax_rate", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("invoice_email", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("create_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("update_time", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_billing_profile"),
        schema=schema,
    )
    op.create_table(
        "invoice",
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("period_end", TZ, nullable=False),
        sa.Column("number", sa.Text(), nullable=True),
        sa.Column("sequence_number", sa.BigInteger(), nullable=True),
        sa.Column("lines", postgresql.JSONB(), nullable=False),
        sa.Column("tax_rate", sa.Numeric(), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("credit_applied_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_credited_minor", sa.BigInteger(), nullable=False),
        sa.Column("credited_to_due_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_due_minor", sa.BigInteger(), nullable=False),
        sa.Column("billing_profile", postgresql.JSONB(), nullable=False),
        sa.Column("payment_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("status_reason", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.Column("grace_period_end", TZ, nullable=True),
        sa.Column("finalize_time", TZ, nullable=True),
        sa.Column("due_time", TZ, nullable=True),
        sa.Column("paid_time", TZ, nullable=True),
        sa.Column("void_time", TZ, nullable=True),
        sa.Column("uncollectible_time", TZ, nullable=True),
        sa.PrimaryKeyConstraint("invoice_id", name="pk_invoice"),
        sa.UniqueConstraint("org_id", "sequence_number", name="uq_invoice_org_id_sequence_number"),
        schema=schema,
    )
    op.create_index(
        "uq_invoice_subscription_period",
        "invoice",
        ["subscription_id", "period_start", sa.text("(reason IN ('period_close', 'manual'))")],
        unique=True,
        schema=schema,
    )
    op.create_index(
        "ix_invoice_org_id_create_time", "invoice", ["org_id", "create_time"], schema=schema
    )
    op.create_index(
        "ix_invoice_due_drafts",
        "invoice",
        ["grace_period_end"],
        schema=schema,
        postgresql_where=sa.text("state = 'draft'"),
    )
    op.create_table(
        "credit_memo",
        sa.Column("credit_memo_id", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("number", sa.Text(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("lines", postgresql.JSONB(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.Column("settlement", sa.Text(), nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("credit_memo_id", name="pk_credit_memo"),
        sa.UniqueConstraint("number", name="uq_credit_memo_number"),
        schema=schema,
    )
    op.create_index("ix_credit_memo_invoice_id", "credit_memo", ["invoice_id"], schema=schema)
    op.create_index("ix_credit_memo_org_id", "credit_memo", ["org_id"], schema=schema)
    op.create_table(
        "credit_balance",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "currency_code", name="pk_credit_balance"),
        schema=schema,
    )
    op.create_table(
        "invoice_counter",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_invoice_counter"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    for table in TABLES:
        op.drop_table(table, schema=schema)
