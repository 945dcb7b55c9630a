"""Outbound webhook tables, on the payments schema's metadata.

The migration ``20261203_webhook_tables`` is a frozen copy of these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY

from services.payments.repository.tables import TZ, metadata

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
