"""The invariants that live in the services' schemas, read in one snapshot.

Everything runs in a single ``REPEATABLE READ, READ ONLY`` transaction, so the
checks see one consistent instant and cannot write even when given a role
that could: point ``DATABASE_URL`` at a read replica, or at the primary with a
read-only role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from services.kit.settings import SERVICE_NAMES, libpq_url
from services.verify.findings import Report

# Period invoices are the ones the unique index guards (one per subscription
# and period); plan-change and cancellation invoices are keyed by instant.
PERIOD_REASONS = ("period_close", "manual")


@dataclass(frozen=True)
class InvoiceRow:
    """What the payments check needs to know about an invoice."""

    invoice_id: str
    org_id: str
    state: str
    total_minor: int
    amount_paid_minor: int
    amount_due_minor: int
    finalize_time: datetime | None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _has_table(conn: asyncpg.Connection, schema: str, table: str) -> bool:
    found = await conn.fetchval("SELECT to_regclass($1)", f"{_q(schema)}.{_q(table)}")
    return found is not None


async def check_usage(conn: asyncpg.Connection, schema: str, report: Report) -> None:
    """Every stored event counted once: aggregates equal a recount of the raw events."""
    s = _q(schema)
    rows = await conn.fetch(
        f"""
        WITH ev AS (
            SELECT subscription_id, metric_code, period_start, count(*) AS n,
                coalesce(sum(value), 0) AS total, max(value) AS top,
                count(DISTINCT unique_value) AS uniq
            FROM {s}.usage_event GROUP BY 1, 2, 3
        )
        SELECT coalesce(a.subscription_id, ev.subscription_id) AS subscription_id,
            coalesce(a.metric_code, ev.metric_code) AS metric_code,
            coalesce(a.period_start, ev.period_start) AS period_start,
            a.aggregation, a.value, a.event_count, coalesce(ev.n, 0) AS n,
            ev.total, ev.top, ev.uniq
        FROM {s}.usage_aggregate a
        FULL JOIN ev USING (subscription_id, metric_code, period_start)
        WHERE a.subscription_id IS NULL
            OR a.event_count <> coalesce(ev.n, 0)
            OR (a.aggregation = 'count' AND a.value <> coalesce(ev.n, 0))
            OR (a.aggregation = 'sum' AND a.value <> coalesce(ev.total, 0))
            OR (a.aggregation = 'max' AND ev.n > 0 AND a.value <> ev.top)
            OR (a.aggregation = 'unique_count' AND a.value <> coalesce(ev.uniq, 0))
        ORDER BY 1, 2, 3
        """
    )
    for r in rows:
        subject = f"{r['subscription_id']} {r['metric_code']} {r['period_start'].isoformat()}"
        if r["aggregation"] is None:
            report.add("usage", subject, f"{r['n']} stored events but no aggregate")
        else:
            report.add(
                "usage",
                subject,
                f"aggregate {r['aggregation']} value {r['value']} over {r['event_count']} events,"
                f" but the stored events recount to {r['n']} events"
                f" (sum {r['total']}, max {r['top']}, unique {r['uniq']})",
            )
    report.checked["usage aggregates"] = int(
        await conn.fetchval(f"SELECT count(*) FROM {s}.usage_aggregate")
    )


async def check_invoices(conn: asyncpg.Connection, schema: str, report: Report) -> list[InvoiceRow]:
    s = _q(schema)
    rows = await conn.fetch(
        f"""
        SELECT i.invoice_id, i.org_id, i.state, i.subtotal_minor, i.tax_minor,
            i.credit_applied_minor, i.total_minor, i.amount_paid_minor,
            i.credited_to_due_minor, i.amount_due_minor, i.finalize_time,
            coalesce(sum((l ->> 'amount_minor')::bigint)
                FILTER (WHERE l ->> 'kind' <> 'tax'), 0) AS lines_subtotal,
            coalesce(sum((l ->> 'amount_minor')::bigint)
                FILTER (WHERE l ->> 'kind' = 'tax'), 0) AS lines_tax
        FROM {s}.invoice i
        LEFT JOIN LATERAL jsonb_array_elements(i.lines) l ON true
        GROUP BY i.invoice_id
        ORDER BY i.org_id, i.invoice_id
        """
    )
    invoices: list[InvoiceRow] = []
    for r in rows:
        inv = r["invoice_id"]
        gross = r["lines_subtotal"] + r["lines_tax"]
        if r["subtotal_minor"] != r["lines_subtotal"] or r["tax_minor"] != r["lines_tax"]:
            report.add(
                "invoice-total",
                inv,
                f"subtotal {r['subtotal_minor']} + tax {r['tax_minor']} but its lines sum to"
                f" {r['lines_subtotal']} + {r['lines_tax']}",
            )
        if r["total_minor"] != max(gross - r["credit_applied_minor"], 0):
            report.add(
                "invoice-total",
                inv,
                f"total {r['total_minor']} but lines {gross} - credit applied"
                f" {r['credit_applied_minor']} make {max(gross - r['credit_applied_minor'], 0)}",
            )
        outstanding = max(r["total_minor"] - r["amount_paid_minor"] - r["credited_to_due_minor"], 0)
        expected_due = outstanding if r["state"] in ("draft", "finalized") else 0
        if r["amount_due_minor"] != expected_due:
            report.add(
                "invoice-total",
                inv,
                f"{r['state']} with amount due {r['amount_due_minor']}, expected {expected_due}",
            )
        invoices.append(
            InvoiceRow(
                inv,
                r["org_id"],
                r["state"],
                r["total_minor"],
                r["amount_paid_minor"],
                r["amount_due_minor"],
                r["finalize_time"],
            )
        )
    report.checked["invoices"] = len(invoices)

    for r in await conn.fetch(
        f"""
        SELECT subscription_id, period_start, array_agg(invoice_id ORDER BY invoice_id) AS ids
        FROM {s}.invoice WHERE reason = ANY($1::text[])
        GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2
        """,
        list(PERIOD_REASONS),
    ):
        report.add(
            "invoice-per-period",
            f"{r['subscription_id']} {r['period_start'].isoformat()}",
            f"{len(r['ids'])} period invoices: {', '.join(r['ids'])}",
        )

    for r in await conn.fetch(
        f"""
        WITH n AS (
            SELECT org_id, sequence_number FROM {s}.invoice WHERE sequence_number IS NOT NULL
        ), series AS (
            SELECT org_id, max(sequence_number) AS top FROM n GROUP BY org_id
        )
        SELECT s.org_id, s.top, array_agg(g ORDER BY g) AS missing
        FROM series s CROSS JOIN LATERAL generate_series(1, s.top) g
        WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.org_id = s.org_id AND n.sequence_number = g)
        GROUP BY s.org_id, s.top ORDER BY s.org_id
        """
    ):
        missing = ", ".join(str(m) for m in r["missing"][:20])
        report.add(
            "invoice-numbers",
            r["org_id"],
            f"numbers 1..{r['top']} miss {missing}{' ...' if len(r['missing']) > 20 else ''}",
        )
    if await _has_table(conn, schema, "invoice_counter"):
        for r in await conn.fetch(
            f"""
            SELECT c.org_id, c.last_sequence, coalesce(max(i.sequence_number), 0) AS top
            FROM {s}.invoice_counter c LEFT JOIN {s}.invoice i USING (org_id)
            GROUP BY c.org_id, c.last_sequence
            HAVING c.last_sequence <> coalesce(max(i.sequence_number), 0)
            ORDER BY 1
            """
        ):
            report.add(
                "invoice-numbers",
                r["org_id"],
                f"counter at {r['last_sequence']} but the highest number issued is {r['top']}",
            )
    return invoices


async def check_outboxes(
    conn: asyncpg.Connection, schemas: Mapping[str, str], settle_seconds: float, report: Report
) -> None:
    """Committed events a relay should have published by now."""
    for service, schema in schemas.items():
        if not await _has_table(conn, schema, "outbox_event"):
            continue
        r = await conn.fetchrow(
            f"""
            SELECT count(*) AS n, min(created_at) AS oldest FROM {_q(schema)}.outbox_event
            WHERE published_at IS NULL
                AND created_at < now() - make_interval(secs => $1::double precision)
            """,
            settle_seconds,
        )
        if r is not None and r["n"]:
            report.add(
                "outbox",
                service,
                f"{r['n']} events unpublished for over {settle_seconds:g}s"
                f" (oldest committed {r['oldest'].isoformat()})",
            )


@dataclass(frozen=True)
class LedgerSnapshot:
    invoices: list[InvoiceRow]
    now: datetime


async def check_ledger(
    database_url: str,
    report: Report,
    *,
    schemas: Mapping[str, str] | None = None,
    settle_seconds: float = 60.0,
) -> LedgerSnapshot:
    """Run the SQL checks on one read-only snapshot; returns what later checks need."""
    names = dict(schemas or {s: s for s in SERVICE_NAMES})
    conn: Any = await asyncpg.connect(libpq_url(database_url))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            now: datetime = await conn.fetchval("SELECT now()")
            if await _has_table(conn, names["usage"], "usage_event"):
                await check_usage(conn, names["usage"], report)
            else:
                report.notes.append(f"usage schema {names['usage']!r} not migrated: skipped")
            invoices: list[InvoiceRow] = []
            if await _has_table(conn, names["invoicing"], "invoice"):
                invoices = await check_invoices(conn, names["invoicing"], report)
            else:
                report.notes.append(
                    f"invoicing schema {names['invoicing']!r} not migrated: skipped"
                )
            await check_outboxes(conn, names, settle_seconds, report)
    finally:
        await conn.close()
    return LedgerSnapshot(invoices, now)
