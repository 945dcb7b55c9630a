"""`tally verify` on a real database: clean data passes, each corruption is named."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from tally.payments.v1 import payments_pb2, payments_pb2_grpc
from tally.payments.v1 import resources_pb2 as pay

from services.cli.main import main as tally_main
from services.kit import migrations
from services.kit.devstack import free_port
from services.verify.run import verify

pytestmark = pytest.mark.integration
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> str:
    for service in ("usage", "invoicing", "payments"):
        await migrations.upgrade_async(service, database_url)
    return database_url


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated)
    try:
        for table in (
            "usage.usage_event",
            "usage.usage_aggregate",
            "invoicing.invoice",
            "invoicing.invoice_counter",
            "invoicing.outbox_event",
        ):
            await conn.execute(f"TRUNCATE {table}")
        yield conn
    finally:
        await conn.close()


async def add_usage(
    conn: asyncpg.Connection, sub: str, n: int, *, counted: int | None = None
) -> None:
    for i in range(n):
        await conn.execute(
            "INSERT INTO usage.usage_event (org_id, idempotency_key, metric_code,"
            " subscription_id, period_start, event_time) VALUES ($1, $2, 'api_calls', $3, $4, $5)",
            f"org-{sub}",
            f"k-{i}",
            sub,
            NOV,
            NOV + timedelta(hours=i),
        )
    counted = n if counted is None else counted
    await conn.execute(
        "INSERT INTO usage.usage_aggregate (subscription_id, metric_code, period_start, org_id,"
        " aggregation, period_end, value, event_count) VALUES ($1, 'api_calls', $2, $3, 'count',"
        " $4, $5, $6)",
        sub,
        NOV,
        f"org-{sub}",
        DEC,
        counted,
        counted,
    )


async def add_invoice(
    conn: asyncpg.Connection,
    org: str,
    seq: int | None,
    *,
    lines: tuple[int, ...] = (1000, 150),
    total: int | None = None,
    state: str = "finalized",
    paid: int = 0,
    sub: str | None = None,
    reason: str = "period_close",
    period: datetime | None = None,
) -> str:
    invoice_id = f"inv-{uuid.uuid4().hex[:8]}"
    subtotal = sum(lines)
    total = subtotal if total is None else total
    due = 0 if state in ("paid", "void") else max(total - paid, 0)
    now = datetime.now(UTC)
    await conn.execute(
        """
        INSERT INTO invoicing.invoice (invoice_id, org_id, subscription_id, reason, state,
            currency_code, period_start, period_end, number, sequence_number, lines, tax_rate,
            subtotal_minor, tax_minor, credit_applied_minor, total_minor, amount_paid_minor,
            amount_credited_minor, credited_to_due_minor, amount_due_minor, billing_profile,
            create_time, update_time, finalize_time)
        VALUES ($1, $2, $3, $4, $5, 'USD', $6, $7, $8, $9, $10::jsonb, 0, $11, 0, 0, $12, $13,
            0, 0, $14, '{}'::jsonb, $15, $15, $16)
        """,
        invoice_id,
        org,
        sub or f"sub-{uuid.uuid4().hex[:6]}",
        reason,
        state,
        period or NOV,
        (period or NOV) + timedelta(days=30),
        f"{org.upper()}-{seq:06d}" if seq else None,
        seq,
        json.dumps([{"kind": "base_fee", "amount_minor": a} for a in lines]),
        subtotal,
        total,
        paid,
        due,
        now,
        None if state == "draft" else LONG_AGO,
    )
    if seq is not None:
        await conn.execute(
            "INSERT INTO invoicing.invoice_counter (org_id, last_sequence) VALUES ($1, $2)"
            " ON CONFLICT (org_id) DO UPDATE SET last_sequence ="
            " greatest(invoicing.invoice_counter.last_sequence, excluded.last_sequence)",
            org,
            seq,
        )
    return invoice_id


async def clean_data(conn: asyncpg.Connection) -> None:
    await add_usage(conn, "sub-a", 5)
    await add_invoice(conn, "orga", 1, state="paid", paid=1150)
    await add_invoice(conn, "orga", 2)
    await add_invoice(conn, "orgb", 1)
    await add_invoice(conn, "orgb", None, state="draft")


async def test_clean_database_passes(db: asyncpg.Connection, migrated: str) -> None:
    await clean_data(db)
    report = await verify(migrated, payments_addr=None)
    assert report.findings == []
    assert report.checked["invoices"] == 4
    assert report.checked["usage aggregates"] == 1


async def test_usage_counted_twice_or_not_at_all_is_reported(
    db: asyncpg.Connection, migrated: str
) -> None:
    await add_usage(db, "sub-double", 3, counted=4)
    await db.execute(
        "INSERT INTO usage.usage_event (org_id, idempotency_key, metric_code, subscription_id,"
        " period_start, event_time) VALUES ('o', 'lost', 'api_calls', 'sub-lost', $1, $1)",
        NOV,
    )
    report = await verify(migrated)
    subjects = sorted(f.subject.split()[0] for f in report.of("usage"))
    assert subjects == ["sub-double", "sub-lost"]
    assert "recount to 3 events" in str(report.of("usage")[0])


async def test_broken_total_is_reported(db: asyncpg.Connection, migrated: str) -> None:
    await clean_data(db)
    broken = await add_invoice(db, "orgc", 1, lines=(500, 500), total=1100)
    report = await verify(migrated)
    assert [f.subject for f in report.of("invoice-total")] == [broken]
    assert "lines 1000" in str(report.findings)
    assert report.of("invoice-numbers") == []


async def test_duplicate_period_invoice_is_reported(db: asyncpg.Connection, migrated: str) -> None:
    # The unique index makes a duplicate impossible through the service, so
    # the corruption needs the index gone first (a restore gone wrong).
    await db.execute("DROP INDEX IF EXISTS invoicing.uq_invoice_subscription_period")
    try:
        first = await add_invoice(db, "orgd", 1, sub="sub-d")
        second = await add_invoice(db, "orgd", 2, sub="sub-d")
        # A plan-change invoice for the same period is not a duplicate.
        await add_invoice(db, "orgd", 3, sub="sub-d", reason="plan_change")
        report = await verify(migrated)
    finally:
        await db.execute("TRUNCATE invoicing.invoice")
        await db.execute(
            "CREATE UNIQUE INDEX uq_invoice_subscription_period ON invoicing.invoice"
            " (subscription_id, period_start, (reason IN ('period_close', 'manual')))"
        )
    [dup] = report.of("invoice-per-period")
    assert dup.subject.startswith("sub-d ")
    assert first in dup.detail and second in dup.detail


async def test_gap_in_numbers_is_reported(db: asyncpg.Connection, migrated: str) -> None:
    await add_invoice(db, "orge", 1)
    await add_invoice(db, "orge", 3)
    await add_invoice(db, "orge", 4)
    await db.execute("UPDATE invoicing.invoice_counter SET last_sequence = 5 WHERE org_id = 'orge'")
    report = await verify(migrated)
    assert [str(f) for f in report.of("invoice-numbers")] == [
        "invoice-numbers: orge: numbers 1..4 miss 2",
        "invoice-numbers: orge: counter at 5 but the highest number issued is 4",
    ]


async def test_stuck_outbox_rows_are_reported(db: asyncpg.Connection, migrated: str) -> None:
    for i, age in enumerate((timedelta(minutes=10), timedelta(seconds=0))):
        await db.execute(
            "INSERT INTO invoicing.outbox_event (event_id, subject, event_type, aggregate_id,"
            " payload, occurred_at, created_at)"
            " VALUES ($1, 's', 't', 'a', '', now(), now() - $2::interval)",
            f"ev-{i}",
            age,
        )
    report = await verify(migrated, settle_seconds=60)
    assert [f.subject for f in report.of("outbox")] == ["invoicing"]
    assert report.of("outbox")[0].detail.startswith("1 events unpublished")


async def test_the_transaction_is_read_only(db: asyncpg.Connection, migrated: str) -> None:
    await clean_data(db)
    before = await db.fetchval("SELECT txid_current()")
    await verify(migrated)
    # Nothing was written: no transaction id was consumed by verify's snapshot.
    assert await db.fetchval("SELECT txid_current()") == before + 1


@dataclass
class FakePayments(payments_pb2_grpc.PaymentsServiceServicer):  # type: ignore[misc]
    """ListPayments from a list (payments is another service)."""

    payments: list[pay.Payment] = field(default_factory=list)

    async def ListPayments(
        self, request: payments_pb2.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ListPaymentsResponse:
        start = int(request.page_token or 0)
        page = self.payments[start : start + request.page_size]
        more = start + request.page_size < len(self.payments)
        return payments_pb2.ListPaymentsResponse(
            payments=page, next_page_token=str(start + request.page_size) if more else ""
        )


@pytest.fixture
async def payments() -> AsyncIterator[tuple[FakePayments, str]]:
    fake = FakePayments()
    server = grpc.aio.server()
    payments_pb2_grpc.add_PaymentsServiceServicer_to_server(fake, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def payment(invoice_id: str, state: Any, n: int = 0) -> pay.Payment:
    return pay.Payment(payment_id=f"pay-{invoice_id}-{n}", invoice_id=invoice_id, state=state)


async def test_payments_collected_once_or_dunning(
    db: asyncpg.Connection, migrated: str, payments: tuple[FakePayments, str]
) -> None:
    fake, address = payments
    paid = await add_invoice(db, "orgf", 1, state="paid", paid=1150)
    dunning = await add_invoice(db, "orgf", 2)
    forgotten = await add_invoice(db, "orgf", 3)
    twice = await add_invoice(db, "orgf", 4, state="paid", paid=1150)
    unpaid_paid = await add_invoice(db, "orgf", 5, state="paid", paid=1150)
    fake.payments = [
        payment(paid, pay.PAYMENT_STATE_SUCCEEDED),
        payment(dunning, pay.PAYMENT_STATE_RETRY_SCHEDULED),
        payment(twice, pay.PAYMENT_STATE_SUCCEEDED, 1),
        payment(twice, pay.PAYMENT_STATE_SUCCEEDED, 2),
        *(payment(f"other-{i}", pay.PAYMENT_STATE_CANCELED) for i in range(600)),
    ]
    report = await verify(migrated, payments_addr=address, settle_seconds=60)
    assert report.checked["payments"] == 604
    assert sorted(f.subject for f in report.of("payments")) == sorted(
        [forgotten, twice, unpaid_paid]
    )


async def test_payments_not_deployed_is_a_note(db: asyncpg.Connection, migrated: str) -> None:
    server = grpc.aio.server()
    payments_pb2_grpc.add_PaymentsServiceServicer_to_server(
        payments_pb2_grpc.PaymentsServiceServicer(), server
    )
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        await clean_data(db)
        report = await verify(migrated, payments_addr=f"127.0.0.1:{port}")
    finally:
        await server.stop(0)
    assert report.clean
    assert any("payments not deployed" in note for note in report.notes)


async def test_cli_exit_codes(
    db: asyncpg.Connection, migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await clean_data(db)
    assert (
        await asyncio.to_thread(tally_main, ["verify", "--database-url", migrated, "--no-payments"])
        == 0
    )
    assert "ok: no findings" in capsys.readouterr().out
    await add_invoice(db, "orga", 4)
    assert (
        await asyncio.to_thread(tally_main, ["verify", "--database-url", migrated, "--no-payments"])
        == 1
    )
    out = capsys.readouterr().out
    assert "invoice-numbers: orga: numbers 1..4 miss 3" in out
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
    assert (
        await asyncio.to_thread(
            tally_main, ["verify", "--database-url", unreachable, "--no-payments"]
        )
        == 2
    )
    assert "tally: error: verify cannot reach the database" in capsys.readouterr().err
