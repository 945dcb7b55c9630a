"""The invoicing repository: SQL for this schema only, and the unit of work."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Self

from sqlalchemy import Row, and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.invoicing import domain as d
from services.invoicing.repository.tables import (
    PERIOD_UNIQUE_KEY,
    billing_profile_table,
    credit_balance_table,
    credit_memo_table,
    invoice_counter_table,
    invoice_table,
    package_version_table,
    plan_change_table,
    subscription_table,
)
from services.invoicing.repository.versions import VersionCache, cache_for
from services.kit.db import Database
from services.kit.keyset import newest_first, where_equal
from services.kit.outbox import Outbox
from services.kit.uow import UnitOfWork


class PeriodAlreadyInvoiced(Exception):
    """The unique (subscription, period) index refused a second invoice."""


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def lines_json(lines: list[d.Line]) -> list[dict[str, Any]]:
    return [
        {
            "id": li.line_id,
            "kind": li.kind.value,
            "description": li.description,
            "amount_minor": li.amount_minor,
            "unrounded": _dec(li.unrounded),
            "quantity": _dec(li.quantity),
            "unit_amount": _dec(li.unit_amount),
            "charge_id": li.charge_id,
            "metric_code": li.metric_code,
            "package_version_id": li.package_version_id,
            "period_start": _iso(li.period_start),
            "period_end": _iso(li.period_end),
            "seconds_used": li.seconds_used,
            "seconds_in_period": li.seconds_in_period,
            "full_amount": _dec(li.full_amount),
            "details": li.details,
        }
        for li in lines
    ]


def _opt_dec(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


def _opt_time(v: str | None) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v)


def lines_from_json(raw: list[dict[str, Any]]) -> list[d.Line]:
    return [
        d.Line(
            line_id=r["id"],
            kind=d.LineKind(r["kind"]),
            description=r["description"],
            amount_minor=int(r["amount_minor"]),
            unrounded=Decimal(r["unrounded"]),
            quantity=Decimal(r["quantity"]),
            unit_amount=_opt_dec(r["unit_amount"]),
            charge_id=r["charge_id"],
            metric_code=r["metric_code"],
            package_version_id=r["package_version_id"],
            period_start=_opt_time(r["period_start"]),
            period_end=_opt_time(r["period_end"]),
            seconds_used=int(r["seconds_used"]),
            seconds_in_period=int(r["seconds_in_period"]),
            full_amount=_opt_dec(r["full_amount"]),
            details=list(r["details"]),
        )
        for r in raw
    ]


def _invoice(row: Row[Any]) -> d.Invoice:
    return d.Invoice(
        invoice_id=row.invoice_id,
        org_id=row.org_id,
        subscription_id=row.subscription_id,
        reason=d.InvoiceReason(row.reason),
        currency_code=row.currency_code,
        period_start=row.period_start,
        period_end=row.period_end,
        create_time=row.create_time,
        state=d.InvoiceState(row.state),
        lines=lines_from_json(row.lines),
        tax_rate=Decimal(row.tax_rate),
        number=row.number or "",
        sequence_number=row.sequence_number or 0,
        credit_applied=row.credit_applied_minor,
        amount_paid=row.amount_paid_minor,
        amount_credited=row.amount_credited_minor,
        credited_to_due=row.credited_to_due_minor,
        billing_profile=dict(row.billing_profile),
        update_time=row.update_time,
        grace_period_end=row.grace_period_end,
        finalize_time=row.finalize_time,
        due_time=row.due_time,
        paid_time=row.paid_time,
        void_time=row.void_time,
        uncollectible_time=row.uncollectible_time,
        payment_id=row.payment_id,
        status_reason=row.status_reason,
    )


def _invoice_values(inv: d.Invoice) -> dict[str, Any]:
    return {
        "invoice_id": inv.invoice_id,
        "org_id": inv.org_id,
        "subscription_id": inv.subscription_id,
        "reason": inv.reason.value,
        "state": inv.state.value,
        "currency_code": inv.currency_code,
        "period_start": inv.period_start,
        "period_end": inv.period_end,
        "number": inv.number or None,
        "sequence_number": inv.sequence_number or None,
        "lines": lines_json(inv.lines),
        "tax_rate": inv.tax_rate,
        "subtotal_minor": inv.subtotal,
        "tax_minor": inv.tax,
        "credit_applied_minor": inv.credit_applied,
        "total_minor": inv.total,
        "amount_paid_minor": inv.amount_paid,
        "amount_credited_minor": inv.amount_credited,
        "credited_to_due_minor": inv.credited_to_due,
        "amount_due_minor": inv.amount_due,
        "billing_profile": inv.billing_profile,
        "payment_id": inv.payment_id,
        "status_reason": inv.status_reason,
        "create_time": inv.create_time,
        "update_time": inv.update_time or inv.create_time,
        "grace_period_end": inv.grace_period_end,
        "finalize_time": inv.finalize_time,
        "due_time": inv.due_time,
        "paid_time": inv.paid_time,
        "void_time": inv.void_time,
        "uncollectible_time": inv.uncollectible_time,
    }


# The statements of the billing run, built once: building a Core statement per
# call (its values, the excluded columns) was a visible share of each event's CPU.
def _upsert_subscription() -> Any:
    t = subscription_table
    stmt = pg_insert(t)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.subscription_id],
        set_={c.name: stmt.excluded[c.name] for c in t.c if c.name != "subscription_id"},
        # A late, older event never overwrites a newer state.
        where=t.c.update_time <= stmt.excluded.update_time,
    )


def _add_balance() -> Any:
    t = credit_balance_table
    stmt = pg_insert(t)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.org_id, t.c.currency_code],
        set_={
            "balance_minor": t.c.balance_minor + stmt.excluded.balance_minor,
            "update_time": stmt.excluded.update_time,
        },
    )


_UPSERT_SUBSCRIPTION = _upsert_subscription()
# ON CONFLICT on the period index rather than a savepoint around the insert:
# the same answer in one round trip instead of three.
_ADD_INVOICE = (
    pg_insert(invoice_table)
    .on_conflict_do_nothing(index_elements=PERIOD_UNIQUE_KEY)
    .returning(invoice_table.c.invoice_id)
)
_SAVE_INVOICE = invoice_table.update().where(
    invoice_table.c.invoice_id == bindparam("b_invoice_id")
)
_OF_SUBSCRIPTION = invoice_table.c.subscription_id == bindparam("sub")
_IS_PERIOD_INVOICE = and_(
    invoice_table.c.period_start == bindparam("start"),
    invoice_table.c.reason.in_(["period_close", "manual"]),
)
# Invoices (not void) that may hold fee lines inside the period.
_MAY_HOLD_FEES = and_(
    invoice_table.c.state != d.InvoiceState.VOID.value,
    invoice_table.c.period_end >= bindparam("start"),
    invoice_table.c.period_start < bindparam("end"),
)
_PERIOD_INVOICE = select(invoice_table).where(_OF_SUBSCRIPTION, _IS_PERIOD_INVOICE)
_FEE_INVOICE_LINES = select(invoice_table.c.lines).where(_OF_SUBSCRIPTION, _MAY_HOLD_FEES)
# Both in one read: what the close looks at before building.
_PERIOD_AND_FEE_INVOICES = select(
    invoice_table,
    _IS_PERIOD_INVOICE.label("is_period_invoice"),
    _MAY_HOLD_FEES.label("may_hold_fees"),
).where(_OF_SUBSCRIPTION, or_(_IS_PERIOD_INVOICE, _MAY_HOLD_FEES))
_NEXT_SEQUENCE = (
    pg_insert(invoice_counter_table)
    .on_conflict_do_update(
        index_elements=[invoice_counter_table.c.org_id],
        set_={"last_sequence": invoice_counter_table.c.last_sequence + 1},
    )
    .returning(invoice_counter_table.c.last_sequence)
)
_RELEASE_SEQUENCE = (
    invoice_counter_table.update()
    .where(invoice_counter_table.c.org_id == bindparam("org"))
    .values(last_sequence=invoice_counter_table.c.last_sequence - 1)
)
_BALANCE = select(credit_balance_table).where(
    credit_balance_table.c.org_id == bindparam("org"),
    credit_balance_table.c.currency_code == bindparam("currency"),
)
_BALANCE_LOCKED = _BALANCE.with_for_update()
_ADD_BALANCE = _add_balance()
_PROFILE = select(billing_profile_table).where(billing_profile_table.c.org_id == bindparam("org"))


def _fee_lines(
    raw: list[dict[str, Any]], period_start: datetime, period_end: datetime
) -> list[d.Line]:
    return d.fees_within(lines_from_json(raw), period_start, period_end)


class InvoicingRepository:
    def __init__(self, session: AsyncSession, versions: VersionCache | None = None) -> None:
        self.session = session
        self.versions = versions or VersionCache()

    # ---------------------------------------------------------- projections

    async def upsert_version(self, values: dict[str, Any]) -> None:
        stmt = pg_insert(package_version_table).values(**values)
        await self.session.execute(stmt.on_conflict_do_nothing())  # published = frozen

    async def version_rows(self, ids: set[str]) -> dict[str, Row[Any]]:
        found = self.versions.known(ids)
        missing = ids - found.keys()
        if missing:
            t = package_version_table
            rows = list(
                await self.session.execute(select(t).where(t.c.package_version_id.in_(missing)))
            )
            self.versions.remember(rows)
            found.update((r.package_version_id, r) for r in rows)
        return found

    async def upsert_subscription(self, values: dict[str, Any]) -> None:
        """``values``: every column of the projection (``protomap.subscription_row``)."""
        await self.session.execute(_UPSERT_SUBSCRIPTION, values)

    async def subscription(self, subscription_id: str) -> Row[Any] | None:
        return (
            await self.session.execute(
                select(subscription_table).where(
                    subscription_table.c.subscription_id == subscription_id
                )
            )
        ).first()

    async def latest_subscription_of(self, org_id: str) -> str | None:
        t = subscription_table
        found: str | None = await self.session.scalar(
            select(t.c.subscription_id)
            .where(t.c.org_id == org_id)
            .order_by((t.c.state == "SUBSCRIPTION_STATE_CANCELED").asc(), t.c.update_time.desc())
            .limit(1)
        )
        return found

    async def record_plan_change(
        self, subscription_id: str, effective_time: datetime, previous_id: str, version_id: str
    ) -> None:
        # A redelivered or replayed change meets its own row.
        await self.session.execute(
            pg_insert(plan_change_table)
            .values(
                subscription_id=subscription_id,
                effective_time=effective_time,
                previous_package_version_id=previous_id,
                package_version_id=version_id,
            )
            .on_conflict_do_nothing(index_elements=["subscription_id", "effective_time"])
        )

    async def plan_changes(
        self, subscription_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, str, str]]:
        """(effective time, previous version, new version) inside (start, end), oldest first."""
        t = plan_change_table
        rows = await self.session.execute(
            select(t.c.effective_time, t.c.previous_package_version_id, t.c.package_version_id)
            .where(
                t.c.subscription_id == subscription_id,
                t.c.effective_time > start,
                t.c.effective_time < end,
            )
            .order_by(t.c.effective_time)
        )
        return [(r[0], r[1], r[2]) for r in rows]

    # ---------------------------------------------------------- profiles

    async def profile(self, org_id: str, *, lock: bool = False) -> Row[Any] | None:
        stmt = _PROFILE.with_for_update() if lock else _PROFILE
        return (await self.session.execute(stmt, {"org": org_id})).first()

    async def save_profile(self, values: dict[str, Any]) -> Row[Any]:
        stmt = pg_insert(billing_profile_table).values(**values)
        update = {k: stmt.excluded[k] for k in values if k not in ("org_id", "create_time")}
        result = await self.session.execute(
            stmt.on_conflict_do_update(index_elements=["org_id"], set_=update).returning(
                billing_profile_table
            )
        )
        row: Row[Any] = result.one()
        return row

    # ---------------------------------------------------------- invoices

    async def add_invoice(self, inv: d.Invoice) -> None:
        result = await self.session.execute(_ADD_INVOICE, _invoice_values(inv))
        if result.first() is None:
            raise PeriodAlreadyInvoiced(inv.subscription_id)

    async def save_invoice(self, inv: d.Invoice) -> None:
        values = _invoice_values(inv)
        values["b_invoice_id"] = values.pop("invoice_id")
        await self.session.execute(_SAVE_INVOICE, values)

    async def invoice(self, invoice_id: str, *, lock: bool = False) -> d.Invoice | None:
        stmt = select(invoice_table).where(invoice_table.c.invoice_id == invoice_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return None if row is None else _invoice(row)

    async def period_invoice(
        self, subscription_id: str, period_start: datetime
    ) -> d.Invoice | None:
        params = {"sub": subscription_id, "start": period_start}
        row = (await self.session.execute(_PERIOD_INVOICE, params)).first()
        return None if row is None else _invoice(row)

    async def billed_fee_lines(
        self, subscription_id: str, period_start: datetime, period_end: datetime
    ) -> list[d.Line]:
        """BASE_FEE / PRORATION_CREDIT lines of invoices (not void) that fall inside
        the period: its in-advance fee, an immediate plan change's lines."""
        rows = await self.session.execute(
            _FEE_INVOICE_LINES, {"sub": subscription_id, "start": period_start, "end": period_end}
        )
        out: list[d.Line] = []
        for (raw,) in rows:
            out += _fee_lines(raw, period_start, period_end)
        return out

    async def period_invoice_and_fees(
        self, subscription_id: str, period_start: datetime, period_end: datetime
    ) -> tuple[d.Invoice | None, list[d.Line]]:
        """``period_invoice`` and ``billed_fee_lines`` in one round trip."""
        rows = await self.session.execute(
            _PERIOD_AND_FEE_INVOICES,
            {"sub": subscription_id, "start": period_start, "end": period_end},
        )
        found: d.Invoice | None = None
        billed: list[d.Line] = []
        for row in rows:
            if row.is_period_invoice:
                found = _invoice(row)
            if row.may_hold_fees:
                billed += _fee_lines(row.lines, period_start, period_end)
        return found, billed

    async def list_invoices(
        self, filters: dict[str, Any], after: list[Any] | None, limit: int
    ) -> list[d.Invoice]:
        t = invoice_table
        stmt = where_equal(select(t), t, filters)
        stmt = newest_first(stmt, t.c.create_time, t.c.invoice_id, after, limit)
        return [_invoice(r) for r in await self.session.execute(stmt)]

    async def due_drafts(self, now: datetime, limit: int) -> list[str]:
        rows = await self.session.execute(
            select(invoice_table.c.invoice_id)
            .where(invoice_table.c.state == "draft", invoice_table.c.grace_period_end <= now)
            .order_by(invoice_table.c.grace_period_end)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [r[0] for r in rows]

    async def next_sequence(self, org_id: str) -> int:
        """The org's next invoice number; the counter row stays locked until commit,
        so concurrent finalizations of one org queue and never leave a gap."""
        taken = await self.session.scalar(_NEXT_SEQUENCE, {"org_id": org_id, "last_sequence": 1})
        return int(taken)

    async def release_sequence(self, org_id: str) -> None:
        """Give back the number ``next_sequence`` just took in this transaction,
        which still holds the counter row: nobody took one since."""
        await self.session.execute(_RELEASE_SEQUENCE, {"org": org_id})

    # ---------------------------------------------------------- credit

    async def balance(self, org_id: str, currency: str, *, lock: bool = False) -> Row[Any] | None:
        stmt = _BALANCE_LOCKED if lock else _BALANCE
        return (await self.session.execute(stmt, {"org": org_id, "currency": currency})).first()

    async def add_balance(self, org_id: str, currency: str, delta: int, now: datetime) -> None:
        await self.session.execute(
            _ADD_BALANCE,
            {
                "org_id": org_id,
                "currency_code": currency,
                "balance_minor": delta,
                "update_time": now,
            },
        )

    async def add_memo(self, values: dict[str, Any]) -> None:
        await self.session.execute(credit_memo_table.insert().values(**values))

    async def memo(self, memo_id: str) -> Row[Any] | None:
        return (
            await self.session.execute(
                select(credit_memo_table).where(credit_memo_table.c.credit_memo_id == memo_id)
            )
        ).first()

    async def memos_of(self, invoice_id: str) -> list[Row[Any]]:
        rows = await self.session.execute(
            select(credit_memo_table)
            .where(credit_memo_table.c.invoice_id == invoice_id)
            .order_by(credit_memo_table.c.create_time)
        )
        return list(rows)

    async def list_memos(
        self, filters: dict[str, Any], after: list[Any] | None, limit: int
    ) -> list[Row[Any]]:
        t = credit_memo_table
        stmt = where_equal(select(t), t, filters)
        stmt = newest_first(stmt, t.c.create_time, t.c.credit_memo_id, after, limit)
        return list(await self.session.execute(stmt))

    async def now(self) -> datetime:
        value = await self.session.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value


class InvoicingUnitOfWork(UnitOfWork):
    repo: InvoicingRepository

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(database, outbox, on_events_committed)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.repo = InvoicingRepository(self.session, cache_for(self.database))
        return self
