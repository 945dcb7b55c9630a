"""Tables of the invoicing schema (SQLAlchemy 2 Core), on the service's metadata.

Projections (package_version, subscription) fed by events; billing profiles;
invoices with their lines (JSONB, frozen at finalization); credit memos;
credit balances; the per-org invoice number counter; immediate plan changes
(the open period's segments). The migrations ``20261124_invoicing_tables`` and
``20261124_plan_changes`` are frozen copies of these.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.kit.tables import service_metadata

SCHEMA = "invoicing"
metadata = service_metadata(SCHEMA)
PERIOD_UNIQUE_INDEX = "uq_invoice_subscription_period"
# Its key, also the ON CONFLICT target that finds it.
PERIOD_UNIQUE_KEY = (
    "subscription_id",
    "period_start",
    text("(reason IN ('period_close', 'manual'))"),
)
TZ = DateTime(timezone=True)

package_version_table = Table(
    "package_version",
    metadata,
    Column("package_version_id", Text, primary_key=True),
    Column("package_id", Text, nullable=False),
    Column("package_code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("billing_interval", Text, nullable=False),
    Column("base_fee", Numeric, nullable=False),
    Column("base_fee_timing", Text, nullable=False),
    Column("trial_days", Integer, nullable=False),
    # The whole catalog PackageVersion (charges with every property).
    Column("payload", LargeBinary, nullable=False),
)

subscription_table = Table(
    "subscription",
    metadata,
    Column("subscription_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False, index=True),
    Column("package_version_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("current_period_start", TZ, nullable=True),
    Column("current_period_end", TZ, nullable=True),
    Column("payload", LargeBinary, nullable=False),
    Column("update_time", TZ, nullable=False),
)

billing_profile_table = Table(
    "billing_profile",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("legal_name", Text, nullable=False, server_default=text("''")),
    Column("address", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("tax_id", Text, nullable=False, server_default=text("''")),
    Column("tax_rate", Numeric, nullable=False, server_default=text("0")),
    Column("invoice_email", Text, nullable=False, server_default=text("''")),
    Column("create_time", TZ, nullable=False, server_default=func.now()),
    Column("update_time", TZ, nullable=False, server_default=func.now()),
)

invoice_table = Table(
    "invoice",
    metadata,
    Column("invoice_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("period_start", TZ, nullable=False),
    Column("period_end", TZ, nullable=False),
    Column("number", Text, nullable=True),
    Column("sequence_number", BigInteger, nullable=True),
    Column("lines", JSONB, nullable=False),
    Column("tax_rate", Numeric, nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    Column("credit_applied_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("amount_paid_minor", BigInteger, nullable=False),
    Column("amount_credited_minor", BigInteger, nullable=False),
    Column("credited_to_due_minor", BigInteger, nullable=False),
    Column("amount_due_minor", BigInteger, nullable=False),
    Column("billing_profile", JSONB, nullable=False),
    Column("payment_id", Text, nullable=False, server_default=text("''")),
    Column("status_reason", Text, nullable=False, server_default=text("''")),
    Column("create_time", TZ, nullable=False),
    Column("update_time", TZ, nullable=False),
    Column("grace_period_end", TZ, nullable=True),
    Column("finalize_time", TZ, nullable=True),
    Column("due_time", TZ, nullable=True),
    Column("paid_time", TZ, nullable=True),
    Column("void_time", TZ, nullable=True),
    Column("uncollectible_time", TZ, nullable=True),
    UniqueConstraint("org_id", "sequence_number"),
    # One period invoice per subscription and period; one plan-change (or
    # cancellation) invoice per subscription and effective instant.
    Index(PERIOD_UNIQUE_INDEX, *PERIOD_UNIQUE_KEY, unique=True),
    Index("ix_invoice_org_id_create_time", "org_id", "create_time"),
    Index("ix_invoice_due_drafts", "grace_period_end", postgresql_where=text("state = 'draft'")),
)

credit_memo_table = Table(
    "credit_memo",
    metadata,
    Column("credit_memo_id", Text, primary_key=True),
    Column("invoice_id", Text, nullable=False, index=True),
    Column("org_id", Text, nullable=False, index=True),
    Column("number", Text, nullable=False, unique=True),
    Column("currency_code", Text, nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("reason", Integer, nullable=False),
    Column("memo", Text, nullable=False),
    Column("settlement", Text, nullable=False),
    Column("create_time", TZ, nullable=False),
)

credit_balance_table = Table(
    "credit_balance",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("balance_minor", BigInteger, nullable=False),
    Column("update_time", TZ, nullable=False),
    PrimaryKeyConstraint("org_id", "currency_code"),
)

# Immediate plan changes, one row per change instant: the period_closed event
# carries a closed period's segments, but PreviewInvoice and RunBilling look at
# the open period, whose changes only this table remembers.
plan_change_table = Table(
    "plan_change",
    metadata,
    Column("subscription_id", Text, nullable=False),
    Column("effective_time", TZ, nullable=False),
    Column("previous_package_version_id", Text, nullable=False),
    Column("package_version_id", Text, nullable=False),
    PrimaryKeyConstraint("subscription_id", "effective_time", name="pk_plan_change"),
)

invoice_counter_table = Table(
    "invoice_counter",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
)
