"""Tables of the payments schema (SQLAlchemy 2 Core), on the service's metadata.

The migration ``20261130_payments_tables`` is a frozen copy of these.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY

from services.kit.tables import service_metadata

SCHEMA = "payments"
metadata = service_metadata(SCHEMA)
TZ = DateTime(timezone=True)

# One provider customer per organisation, created on first need.
customer_table = Table(
    "customer",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("provider", Text, nullable=False),
    Column("provider_customer_id", Text, nullable=False, unique=True),
    Column("create_time", TZ, nullable=False, server_default=func.now()),
)

payment_method_table = Table(
    "payment_method",
    metadata,
    Column("payment_method_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False, index=True),
    Column("provider", Text, nullable=False),
    Column("provider_payment_method_id", Text, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("brand", Text, nullable=False, server_default=text("''")),
    Column("last4", Text, nullable=False, server_default=text("''")),
    Column("exp_month", Integer, nullable=False, server_default=text("0")),
    Column("exp_year", Integer, nullable=False, server_default=text("0")),
    Column("country", Text, nullable=False, server_default=text("''")),
    Column("is_default", Boolean, nullable=False, server_default=false()),
    Column("create_time", TZ, nullable=False),
    Column("detached_time", TZ, nullable=True),
    # At most one default per org, by the database rather than by hope.
    Index(
        "uq_payment_method_default",
        "org_id",
        unique=True,
        postgresql_where=text("is_default AND detached_time IS NULL"),
    ),
)

# Local projection of invoicing's invoice.finalized / paid / voided.
invoice_table = Table(
    "invoice",
    metadata,
    Column("invoice_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False, index=True),
    Column("subscription_id", Text, nullable=False),
    Column("number", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("amount_due_minor", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("update_time", TZ, nullable=False),
)

payment_table = Table(
    "payment",
    metadata,
    Column("payment_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False, index=True),
    Column("invoice_id", Text, nullable=False, unique=True),
    Column("invoice_number", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("amount_refunded_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("state", Text, nullable=False),
    Column("action_reason", Text, nullable=True),
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    Column("retries_used", Integer, nullable=False, server_default=text("0")),
    Column("next_retry_time", TZ, nullable=True),
    Column("payment_method_id", Text, nullable=False, server_default=text("''")),
    Column("provider", Text, nullable=False, server_default=text("''")),
    Column("provider_payment_intent_id", Text, nullable=False, server_default=text("''")),
    Column("failure_code", Text, nullable=False, server_default=text("''")),
    Column("failure_message", Text, nullable=False, server_default=text("''")),
    Column("dispute_id", Text, nullable=False, server_default=text("''")),
    Column("dispute_amount_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("dispute_reason", Text, nullable=False, server_default=text("''")),
    Column("create_time", TZ, nullable=False),
    Column("update_time", TZ, nullable=False),
    Column("succeed_time", TZ, nullable=True),
    Index("ix_payment_state_next_retry_time", "state", "next_retry_time"),
    Index("ix_payment_create_time", "create_time", "payment_id"),
)

payment_attempt_table = Table(
    "payment_attempt",
    metadata,
    Column("attempt_id", Text, primary_key=True),
    Column("payment_id", Text, nullable=False),
    Column("invoice_id", Text, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("attempt_number", Integer, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("payment_method_id", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("provider_payment_method_id", Text, nullable=False),
    Column("provider_customer_id", Text, nullable=False),
    Column("provider_payment_intent_id", Text, nullable=True, unique=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("failure_code", Text, nullable=False, server_default=text("''")),
    Column("failure_message", Text, nullable=False, server_default=text("''")),
    Column("final_attempt", Boolean, nullable=False, server_default=false()),
    # False until the provider's answer to the create call is recorded: the
    # dispatcher resends such attempts with the same idempotency key.
    Column("dispatched", Boolean, nullable=False, server_default=false()),
    Column("lease_until", TZ, nullable=True),
    Column("create_time", TZ, nullable=False),
    Column("complete_time", TZ, nullable=True),
    UniqueConstraint("payment_id", "attempt_number"),
    Index(
        "ix_payment_attempt_undispatched",
        "create_time",
        postgresql_where=text("NOT dispatched"),
    ),
)

refund_table = Table(
    "refund",
    metadata,
    Column("refund_id", Text, primary_key=True),
    Column("payment_id", Text, nullable=False, index=True),
    Column("org_id", Text, nullable=False, index=True),
    Column("invoice_id", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=text("''")),
    Column("credit_memo_id", Text, nullable=False, server_default=text("''")),
    Column("provider_refund_id", Text, nullable=True, unique=True),
    Column("create_time", TZ, nullable=False),
    Column("complete_time", TZ, nullable=True),
)

# The webhook inbox: each provider event id is applied once, by webhook or sync.
provider_event_table = Table(
    "provider_event",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("provider", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("created", TZ, nullable=False),
    Column("source", Text, nullable=False),
    Column("receive_time", TZ, nullable=False, server_default=func.now()),
)

sync_state_table = Table(
    "sync_state",
    metadata,
    Column("name", Text, primary_key=True),
    Column("cursor_time", TZ, nullable=False),
    Column("update_time", TZ, nullable=False),
)

# Outbound webhooks (services/payments/outbound), migration 20261203_webhook_tables.
webhook_endpoint_table = Table(
    "webhook_endpoint",
    metadata,
    Column("endpoint_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("event_types", ARRAY(Text), nullable=False),
    Column("secret", Text, nullable=False),
    # Kept during a rotation so receivers holding the old secret still verify
    # until ``previous_secret_expire_time``.
    Column("previous_secret", Text, nullable=False, server_default=text("''")),
    Column("previous_secret_expire_time", TZ),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    # Why it is disabled ("webhook_endpoint.disabled: ..." when Tally did it).
    Column("disabled_reason", Text, nullable=False, server_default=text("''")),
    # First failed attempt since the last success: sustained failure disables.
    Column("failing_since", TZ),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("create_time", TZ, nullable=False, server_default=func.now()),
    Column("update_time", TZ, nullable=False, server_default=func.now()),
    Index("ix_webhook_endpoint_org_id", "org_id"),
)

webhook_delivery_table = Table(
    "webhook_delivery",
    metadata,
    Column("delivery_id", Text, primary_key=True),
    Column("endpoint_id", Text, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_time", TZ),
    Column("first_attempt_time", TZ),
    Column("last_attempt_time", TZ),
    Column("last_status_code", Integer),
    Column("last_response_ms", BigInteger),
    Column("last_error", Text, nullable=False, server_default=text("''")),
    Column("lease_until", TZ),
    Column("create_time", TZ, nullable=False, server_default=func.now()),
    UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_delivery_event_id"),
    Index(
        "ix_webhook_delivery_due",
        "next_attempt_time",
        postgresql_where=text("state = 'pending'"),
    ),
    Index("ix_webhook_delivery_endpoint", "endpoint_id", "create_time"),
)
