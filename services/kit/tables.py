"""The kit's own tables, created in every service's schema by its first migration."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID


def outbox_table(metadata: MetaData) -> Table:
    """Events written in the same transaction as the change that caused them.

    ``seq`` gives the publish order: the relay sends strictly by ``seq``, so
    events of one aggregate reach JetStream in the order they were committed.
    """
    return Table(
        "outbox_event",
        metadata,
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", Text, nullable=False, unique=True),
        Column("subject", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("context", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index(
            "ix_outbox_event_unpublished",
            "seq",
            postgresql_where=text("published_at IS NULL"),
        ),
    )


def inbox_table(metadata: MetaData) -> Table:
    """Ids of the events each consumer has applied, written with the effect."""
    return Table(
        "inbox_message",
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", Text, nullable=False),
        Column("subject", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
    )


def request_table(metadata: MetaData) -> Table:
    """Responses of mutating RPCs by ``request_id`` (AIP-155), for safe retries."""
    return Table(
        "idempotent_request",
        metadata,
        Column("method", Text, nullable=False),
        Column("request_id", Text, nullable=False),
        Column("request_hash", Text, nullable=False),
        Column("response", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("method", "request_id"),
    )


def audit_table(metadata: MetaData) -> Table:
    """Every mutating RPC a service committed or refused (services/kit/audit.py).

    ``entry_id`` is a UUID, so (create_time, entry_id) orders entries across
    every service's table alike and one cursor pages them all (the uuid type
    compares by bytes, as its canonical text does in Python, where text would
    follow the database's collation). Btree indexes scan backwards, so the
    ascending ones serve newest-first pages.
    """
    return Table(
        "audit_entry",
        metadata,
        Column("entry_id", UUID(as_uuid=False), primary_key=True),
        Column("create_time", DateTime(timezone=True), nullable=False),
        Column("actor", Text, nullable=False),
        Column("actor_role", Text, nullable=False, server_default=""),
        Column("org_id", Text, nullable=False, server_default=""),
        Column("action", Text, nullable=False),
        Column("target", Text, nullable=False, server_default=""),
        Column("request_id", Text, nullable=False, server_default=""),
        Column("outcome", Text, nullable=False),
        Column("status_code", Text, nullable=False),
        Index("ix_audit_entry_newest", "create_time", "entry_id"),
        Index("ix_audit_entry_org", "org_id", "create_time", "entry_id"),
    )


def service_metadata(schema: str) -> MetaData:
    """A service's metadata, born with the kit's outbox, inbox, request and audit tables."""
    from services.kit.db import make_metadata

    metadata = make_metadata(schema)
    outbox_table(metadata)
    inbox_table(metadata)
    request_table(metadata)
    audit_table(metadata)
    return metadata
