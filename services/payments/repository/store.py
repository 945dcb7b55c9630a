"""The payments repository: SQL for this schema only, and the unit of work."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Self

from sqlalchemy import (
    ARRAY,
    Row,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.db import Database
from services.kit.keyset import newest_first, where_equal
from services.kit.outbox import Outbox
from services.kit.uow import UnitOfWork
from services.payments import domain as d

# A module, not a name: outbound's store imports this package's tables, so
# either side may be the one imported first.
from services.payments.outbound import store as outbound_store
from services.payments.repository.tables import (
    customer_table,
    invoice_table,
    payment_attempt_table,
    payment_method_table,
    payment_table,
    provider_event_table,
    refund_table,
    sync_state_table,
)

_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (d.Payment, d.Attempt, d.Refund)
}
_ENUM_FIELDS = ("state", "trigger", "action_reason")


def _values(obj: d.Payment | d.Attempt | d.Refund) -> dict[str, Any]:
    # getattr, not dataclasses.asdict: every field is a scalar, and asdict's
    # deep copy was a visible share of a finalized invoice's CPU.
    out = {k: getattr(obj, k) for k in _FIELD_NAMES[type(obj)]}
    for k in _ENUM_FIELDS:
        v = out.get(k)
        if isinstance(v, str):
            out[k] = str(v)
    return out


def _params(table: Table, names: Iterable[str], prefix: str = "") -> dict[str, Any]:
    """A typed placeholder per column, named ``prefix + column``."""
    return {n: bindparam(prefix + n, type_=table.c[n].type) for n in names}


def _typed_params(table: Table, names: Iterable[str], prefix: str) -> list[Any]:
    # Cast: in a SELECT list PostgreSQL would take an untyped placeholder for text.
    return [cast(bindparam(prefix + n, type_=table.c[n].type), table.c[n].type) for n in names]


# Statements every finalized invoice runs, built once: building them per call
# cost more than executing them. Payments and attempts are written whole, in
# the state their transaction leaves them.
_PAYMENT_COLUMNS = _FIELD_NAMES[d.Payment]
_ATTEMPT_COLUMNS = _FIELD_NAMES[d.Attempt]
_INVOICE_COLUMNS = tuple(c.name for c in invoice_table.c)


def _without(names: tuple[str, ...], name: str) -> list[str]:
    return [n for n in names if n != name]


_INSERT_PAYMENT = (
    pg_insert(payment_table)
    .values(_params(payment_table, _PAYMENT_COLUMNS))
    .on_conflict_do_nothing(index_elements=["invoice_id"])
    .returning(payment_table.c.payment_id)
)
# The payment and its first attempt in one round trip: the attempt is written
# only when the payment is (not when the invoice already has one).
_INSERT_PAYMENT_AND_ATTEMPT = (
    pg_insert(payment_attempt_table)
    .from_select(
        list(_ATTEMPT_COLUMNS),
        select(*_typed_params(payment_attempt_table, _ATTEMPT_COLUMNS, "a_")).select_from(
            _INSERT_PAYMENT.cte("new_payment")
        ),
    )
    .returning(payment_attempt_table.c.attempt_id)
)
_SAVE_PAYMENT = (
    payment_table.update()
    .where(payment_table.c.payment_id == bindparam("b_payment_id"))
    .values(_params(payment_table, _without(_PAYMENT_COLUMNS, "payment_id")))
)
_INSERT_ATTEMPT = pg_insert(payment_attempt_table).values(
    _params(payment_attempt_table, _ATTEMPT_COLUMNS)
)
_SAVE_ATTEMPT = (
    payment_attempt_table.update()
    .where(payment_attempt_table.c.attempt_id == bindparam("b_attempt_id"))
    .values(_params(payment_attempt_table, _without(_ATTEMPT_COLUMNS, "attempt_id"), "a_"))
)
# An applied outcome saves its attempt and its payment together.
_SAVE_ATTEMPT_AND_PAYMENT = _SAVE_PAYMENT.add_cte(_SAVE_ATTEMPT.cte("saved_attempt"))
_PAYMENT_OF_ATTEMPT = (
    select(payment_table)
    .where(
        payment_table.c.payment_id
        == select(payment_attempt_table.c.payment_id)
        .where(payment_attempt_table.c.attempt_id == bindparam("attempt_id"))
        .scalar_subquery()
    )
    .with_for_update()
)


def _upsert_invoice_stmt() -> Any:
    stmt = pg_insert(invoice_table).values(_params(invoice_table, _INVOICE_COLUMNS))
    return stmt.on_conflict_do_update(
        index_elements=["invoice_id"],
        set_={k: stmt.excluded[k] for k in _INVOICE_COLUMNS if k != "invoice_id"},
    )


_UPSERT_INVOICE = _upsert_invoice_stmt()
_INVOICES = select(invoice_table).where(
    invoice_table.c.invoice_id == any_(bindparam("invoice_ids", type_=ARRAY(Text)))
)


def _means_stmt() -> Any:
    """The org's provider customer and default method, as one row (NULLs when missing)."""
    org = bindparam("means_org_id", type_=Text)
    m = payment_method_table
    one = select(literal_column("1").label("one")).subquery("one")
    customer = (
        select(customer_table.c.provider_customer_id)
        .where(customer_table.c.org_id == org)
        .scalar_subquery()
    )
    return select(
        customer.label("provider_customer_id"),
        m.c.payment_method_id,
        m.c.provider,
        m.c.provider_payment_method_id,
    ).select_from(
        one.outerjoin(m, and_(m.c.org_id == org, m.c.is_default, m.c.detached_time.is_(None)))
    )


_MEANS = _means_stmt()
# A finalized invoice's projection is written in the statement that reads how to charge it.
_UPSERT_INVOICE_READ_MEANS = _MEANS.add_cte(_UPSERT_INVOICE.cte("upserted_invoice"))


@dataclass(frozen=True)
class Means:
    """How an org can be charged: its provider customer and default method, if any."""

    customer_id: str | None
    # (payment method id, provider, provider's payment method id)
    method: tuple[str, str, str] | None


def _means(row: Row[Any] | None) -> Means:
    if row is None:
        return Means(None, None)
    method = (
        None
        if row.payment_method_id is None
        else (row.payment_method_id, row.provider, row.provider_payment_method_id)
    )
    return Means(row.provider_customer_id, method)


def _payment(row: Row[Any]) -> d.Payment:
    m = row._mapping
    values = {k: m[k] for k in _FIELD_NAMES[d.Payment] if k in m}
    values["state"] = d.PaymentState(m["state"])
    values["action_reason"] = (
        None if m["action_reason"] is None else d.ActionReason(m["action_reason"])
    )
    return d.Payment(**values)


def _attempt(row: Row[Any]) -> d.Attempt:
    m = row._mapping
    values = {k: m[k] for k in _FIELD_NAMES[d.Attempt] if k in m}
    values["state"] = d.AttemptState(m["state"])
    values["trigger"] = d.AttemptTrigger(m["trigger"])
    values["provider_payment_intent_id"] = m["provider_payment_intent_id"] or ""
    return d.Attempt(**values)


def _refund(row: Row[Any]) -> d.Refund:
    m = row._mapping
    values = {k: m[k] for k in _FIELD_NAMES[d.Refund] if k in m}
    values["state"] = d.RefundState(m["state"])
    values["provider_refund_id"] = m["provider_refund_id"] or ""
    return d.Refund(**values)


def _attempt_values(a: d.Attempt) -> dict[str, Any]:
    values = _values(a)
    # NULL, not "", until the provider names it: the column is unique.
    values["provider_payment_intent_id"] = a.provider_payment_intent_id or None
    return values


def _prefixed(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {prefix + k: v for k, v in values.items()}


def _attempt_update(a: d.Attempt) -> dict[str, Any]:
    """Parameters of ``_SAVE_ATTEMPT``."""
    values = _prefixed(_attempt_values(a), "a_")
    values["b_attempt_id"] = values.pop("a_attempt_id")
    return values


def _refund_values(r: d.Refund) -> dict[str, Any]:
    values = _values(r)
    values["provider_refund_id"] = r.provider_refund_id or None
    return values


class PaymentsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---------------------------------------------------------- customers

    async def customer_id(self, org_id: str) -> str | None:
        found: str | None = await self.session.scalar(
            select(customer_table.c.provider_customer_id).where(customer_table.c.org_id == org_id)
        )
        return found

    async def remember_customer(self, org_id: str, provider: str, customer_id: str) -> str:
        """The org's customer id: this one, or the one a concurrent first need stored."""
        await self.session.execute(
            pg_insert(customer_table)
            .values(org_id=org_id, provider=provider, provider_customer_id=customer_id)
            .on_conflict_do_nothing(index_elements=["org_id"])
        )
        stored = await self.customer_id(org_id)
        assert stored is not None
        return stored

    async def org_of_customer(self, customer_id: str) -> str | None:
        found: str | None = await self.session.scalar(
            select(customer_table.c.org_id).where(
                customer_table.c.provider_customer_id == customer_id
            )
        )
        return found

    # ---------------------------------------------------------- payment methods

    async def method(self, payment_method_id: str) -> Row[Any] | None:
        return (
            await self.session.execute(
                select(payment_method_table).where(
                    payment_method_table.c.payment_method_id == payment_method_id
                )
            )
        ).first()

    async def method_by_provider_id(self, provider_method_id: str) -> Row[Any] | None:
        return (
            await self.session.execute(
                select(payment_method_table).where(
                    payment_method_table.c.provider_payment_method_id == provider_method_id
                )
            )
        ).first()

    async def means(self, org_id: str) -> Means:
        """The org's provider customer and default method, in one round trip."""
        return _means((await self.session.execute(_MEANS, {"means_org_id": org_id})).first())

    async def default_method(self, org_id: str) -> Row[Any] | None:
        t = payment_method_table
        return (
            await self.session.execute(
                select(t).where(t.c.org_id == org_id, t.c.is_default, t.c.detached_time.is_(None))
            )
        ).first()

    async def insert_method(self, values: Mapping[str, Any]) -> None:
        await self.session.execute(
            pg_insert(payment_method_table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["provider_payment_method_id"])
        )

    async def make_default(self, org_id: str, payment_method_id: str) -> None:
        t = payment_method_table
        await self.session.execute(
            update(t)
            .where(t.c.org_id == org_id, t.c.is_default, t.c.payment_method_id != payment_method_id)
            .values(is_default=False)
        )
        await self.session.execute(
            update(t).where(t.c.payment_method_id == payment_method_id).values(is_default=True)
        )

    async def detach_method(self, payment_method_id: str, now: datetime) -> None:
        t = payment_method_table
        await self.session.execute(
            update(t)
            .where(t.c.payment_method_id == payment_method_id)
            .values(is_default=False, detached_time=now)
        )

    async def list_methods(
        self, org_id: str, after: list[Any] | None, limit: int
    ) -> list[Row[Any]]:
        t = payment_method_table
        # Default first (rank 0), then newest first.
        rank = case((t.c.is_default, 0), else_=1)
        stmt = select(t, rank.label("rank")).where(
            t.c.org_id == org_id, t.c.detached_time.is_(None)
        )
        if after:
            a_rank, a_time, a_id = int(after[0]), datetime.fromisoformat(after[1]), after[2]
            stmt = stmt.where(
                or_(
                    rank > a_rank,
                    and_(rank == a_rank, t.c.create_time < a_time),
                    and_(rank == a_rank, t.c.create_time == a_time, t.c.payment_method_id < a_id),
                )
            )
        stmt = stmt.order_by(rank, t.c.create_time.desc(), t.c.payment_method_id.desc()).limit(
            limit
        )
        return list((await self.session.execute(stmt)).all())

    # ---------------------------------------------------------- invoices

    async def upsert_invoice(self, values: Mapping[str, Any]) -> None:
        await self.session.execute(_UPSERT_INVOICE, dict(values))

    async def upsert_invoice_reading_means(self, values: Mapping[str, Any]) -> Means:
        """``upsert_invoice``, and how its org can be charged, in one round trip."""
        params = {**values, "means_org_id": values["org_id"]}
        return _means((await self.session.execute(_UPSERT_INVOICE_READ_MEANS, params)).first())

    async def set_invoice_state(self, invoice_id: str, state: str, now: datetime) -> None:
        await self.session.execute(
            update(invoice_table)
            .where(invoice_table.c.invoice_id == invoice_id)
            .values(state=state, update_time=now)
        )

    async def invoices(self, invoice_ids: Iterable[str]) -> dict[str, Row[Any]]:
        """The known ones of ``invoice_ids``, by id, in one round trip."""
        ids = list(invoice_ids)
        if not ids:
            return {}
        rows = await self.session.execute(_INVOICES, {"invoice_ids": ids})
        return {r.invoice_id: r for r in rows}

    async def invoice(self, invoice_id: str) -> Row[Any] | None:
        return (
            await self.session.execute(
                select(invoice_table).where(invoice_table.c.invoice_id == invoice_id)
            )
        ).first()

    # ---------------------------------------------------------- payments

    async def payment(self, payment_id: str, *, lock: bool = False) -> d.Payment | None:
        stmt = select(payment_table).where(payment_table.c.payment_id == payment_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return None if row is None else _payment(row)

    async def payment_of_invoice(self, invoice_id: str, *, lock: bool = False) -> d.Payment | None:
        stmt = select(payment_table).where(payment_table.c.invoice_id == invoice_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return None if row is None else _payment(row)

    async def insert_payment(self, p: d.Payment, first_attempt: d.Attempt | None = None) -> bool:
        """False when the invoice already has its payment (a redelivered finalize);
        ``first_attempt`` is written with the payment, and only with it."""
        values = _values(p)
        if first_attempt is None:
            result = await self.session.execute(_INSERT_PAYMENT, values)
        else:
            values.update(_prefixed(_attempt_values(first_attempt), "a_"))
            result = await self.session.execute(_INSERT_PAYMENT_AND_ATTEMPT, values)
        return result.first() is not None

    async def save_payment(self, p: d.Payment) -> None:
        values = _values(p)
        values["b_payment_id"] = values.pop("payment_id")
        await self.session.execute(_SAVE_PAYMENT, values)

    async def payment_of_attempt(self, attempt_id: str) -> d.Payment | None:
        """The attempt's payment, locked (payment before attempt, as every path locks)."""
        row = (await self.session.execute(_PAYMENT_OF_ATTEMPT, {"attempt_id": attempt_id})).first()
        return None if row is None else _payment(row)

    async def due_retries(self, now: datetime, limit: int) -> list[str]:
        t = payment_table
        rows = await self.session.execute(
            select(t.c.payment_id)
            .where(t.c.state == d.PaymentState.RETRY_SCHEDULED.value, t.c.next_retry_time <= now)
            .order_by(t.c.next_retry_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [r[0] for r in rows]

    async def waiting_for_method(self, org_id: str) -> list[str]:
        t = payment_table
        rows = await self.session.execute(
            select(t.c.payment_id).where(
                t.c.org_id == org_id,
                t.c.state == d.PaymentState.REQUIRES_ACTION.value,
                t.c.action_reason == d.ActionReason.NO_PAYMENT_METHOD.value,
            )
        )
        return [r[0] for r in rows]

    async def list_payments(
        self, filters: Mapping[str, Any], after: list[Any] | None, limit: int
    ) -> list[d.Payment]:
        t = payment_table
        stmt = where_equal(select(t), t, filters)
        stmt = newest_first(stmt, t.c.create_time, t.c.payment_id, after, limit)
        return [_payment(r) for r in await self.session.execute(stmt)]

    # ---------------------------------------------------------- attempts

    async def insert_attempt(self, a: d.Attempt) -> None:
        await self.session.execute(_INSERT_ATTEMPT, _attempt_values(a))

    async def save_attempt(self, a: d.Attempt) -> None:
        await self.session.execute(_SAVE_ATTEMPT, _attempt_update(a))

    async def save_attempt_and_payment(self, a: d.Attempt, p: d.Payment) -> None:
        """``save_attempt`` and ``save_payment`` in one round trip."""
        values = _values(p)
        values["b_payment_id"] = values.pop("payment_id")
        values.update(_attempt_update(a))
        await self.session.execute(_SAVE_ATTEMPT_AND_PAYMENT, values)

    async def attempt(self, attempt_id: str) -> d.Attempt | None:
        row = (
            await self.session.execute(
                select(payment_attempt_table).where(
                    payment_attempt_table.c.attempt_id == attempt_id
                )
            )
        ).first()
        return None if row is None else _attempt(row)

    async def attempt_by_intent(self, payment_intent_id: str) -> d.Attempt | None:
        row = (
            await self.session.execute(
                select(payment_attempt_table).where(
                    payment_attempt_table.c.provider_payment_intent_id == payment_intent_id
                )
            )
        ).first()
        return None if row is None else _attempt(row)

    async def list_attempts(
        self, payment_id: str, after: list[Any] | None, limit: int
    ) -> list[d.Attempt]:
        t = payment_attempt_table
        stmt = select(t).where(t.c.payment_id == payment_id)
        if after:
            stmt = stmt.where(t.c.attempt_number < int(after[0]))
        stmt = stmt.order_by(t.c.attempt_number.desc()).limit(limit)
        return [_attempt(r) for r in await self.session.execute(stmt)]

    async def claim_undispatched(
        self, now: datetime, lease: timedelta, limit: int, attempt_id: str | None = None
    ) -> list[d.Attempt]:
        """Lease attempts whose provider call has no recorded answer yet.

        The lease (not a held row lock) keeps replicas from sending the same
        attempt at once while no transaction stays open over the provider call.
        """
        t = payment_attempt_table
        pick = (
            select(t.c.attempt_id)
            .where(~t.c.dispatched, t.c.state == d.AttemptState.PROCESSING.value)
            .order_by(t.c.create_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if attempt_id is not None:
            # The attempt's creator: it holds the lease it was created with.
            pick = pick.where(t.c.attempt_id == attempt_id)
        else:
            pick = pick.where(or_(t.c.lease_until.is_(None), t.c.lease_until < now))
        rows = await self.session.execute(
            update(t)
            .where(t.c.attempt_id.in_(pick.scalar_subquery()))
            .values(lease_until=now + lease)
            .returning(t)
        )
        return [_attempt(r) for r in rows]

    async def unsettled(self, sent_before: datetime, limit: int) -> list[d.Attempt]:
        """Attempts the provider accepted whose outcome never reached us."""
        t = payment_attempt_table
        rows = await self.session.execute(
            select(t)
            .where(
                t.c.dispatched,
                t.c.state == d.AttemptState.PROCESSING.value,
                t.c.provider_payment_intent_id.is_not(None),
                t.c.create_time < sent_before,
            )
            .order_by(t.c.create_time)
            .limit(limit)
        )
        return [_attempt(r) for r in rows]

    # ---------------------------------------------------------- refunds

    async def insert_refund(self, r: d.Refund) -> None:
        await self.session.execute(pg_insert(refund_table).values(**_refund_values(r)))

    async def save_refund(self, r: d.Refund) -> None:
        values = _refund_values(r)
        values.pop("refund_id")
        await self.session.execute(
            update(refund_table).where(refund_table.c.refund_id == r.refund_id).values(**values)
        )

    async def refund(self, refund_id: str) -> d.Refund | None:
        row = (
            await self.session.execute(
                select(refund_table).where(refund_table.c.refund_id == refund_id)
            )
        ).first()
        return None if row is None else _refund(row)

    async def refund_by_provider_id(self, provider_refund_id: str) -> d.Refund | None:
        row = (
            await self.session.execute(
                select(refund_table).where(refund_table.c.provider_refund_id == provider_refund_id)
            )
        ).first()
        return None if row is None else _refund(row)

    async def refunds_of(self, payment_id: str) -> list[d.Refund]:
        rows = await self.session.execute(
            select(refund_table)
            .where(refund_table.c.payment_id == payment_id)
            .order_by(refund_table.c.create_time)
        )
        return [_refund(r) for r in rows]

    async def unsent_refunds(self, created_before: datetime, limit: int) -> list[str]:
        t = refund_table
        rows = await self.session.execute(
            select(t.c.refund_id)
            .where(
                t.c.state == d.RefundState.PENDING.value,
                t.c.provider_refund_id.is_(None),
                t.c.create_time < created_before,
            )
            .order_by(t.c.create_time)
            .limit(limit)
        )
        return [r[0] for r in rows]

    async def list_refunds(
        self, filters: Mapping[str, Any], after: list[Any] | None, limit: int
    ) -> list[d.Refund]:
        t = refund_table
        stmt = where_equal(select(t), t, filters)
        stmt = newest_first(stmt, t.c.create_time, t.c.refund_id, after, limit)
        return [_refund(r) for r in await self.session.execute(stmt)]

    # ---------------------------------------------------------- provider events, sync

    async def claim_event(
        self, event_id: str, provider: str, kind: str, created: datetime, source: str
    ) -> bool:
        """True the first time this provider event is seen (webhook and sync share it)."""
        result = await self.session.execute(
            pg_insert(provider_event_table)
            .values(event_id=event_id, provider=provider, kind=kind, created=created, source=source)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(provider_event_table.c.event_id)
        )
        return result.first() is not None

    async def sync_cursor(self, name: str, *, lock: bool = False) -> datetime | None:
        stmt = select(sync_state_table.c.cursor_time).where(sync_state_table.c.name == name)
        if lock:
            stmt = stmt.with_for_update()
        found: datetime | None = await self.session.scalar(stmt)
        return found

    async def set_sync_cursor(self, name: str, cursor: datetime, now: datetime) -> None:
        stmt = pg_insert(sync_state_table).values(name=name, cursor_time=cursor, update_time=now)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"cursor_time": stmt.excluded.cursor_time, "update_time": now},
            )
        )


class PaymentsUnitOfWork(UnitOfWork):
    repo: PaymentsRepository
    webhooks: outbound_store.WebhookRepository

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(database, outbox, on_events_committed)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.repo = PaymentsRepository(self.session)
        self.webhooks = outbound_store.WebhookRepository(self.session)
        return self
