"""The subscriptions repository: SQL for this schema only."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.db import Database
from services.kit.errors import AlreadyExists
from services.kit.outbox import Outbox
from services.kit.uow import UnitOfWork
from services.subscriptions import domain as d
from services.subscriptions.repository import entitlement_notices as notices
from services.subscriptions.repository.projections import (
    EntitlementChanges,
    ProjectionQueries,
)
from services.subscriptions.repository.tables import (
    EXTERNAL_ID_UNIQUE_INDEX,
    LIVE_UNIQUE_INDEX,
    billing_clock_table,
    closed_period_table,
    schedule_table,
    subscription_table,
)

# Seven parameters a row, well below PostgreSQL's limit of 32,767 a statement.
CLOSED_ROWS_PER_INSERT = 1000


def _marks_json(marks: Iterable[d.Mark]) -> list[dict[str, str]]:
    return [
        {"at": m.at.isoformat(), "version": m.package_version_id, "kind": m.kind.value}
        for m in marks
    ]


def _marks(raw: Sequence[dict[str, str]]) -> list[d.Mark]:
    return [d.Mark(datetime.fromisoformat(m["at"]), m["version"], d.Kind(m["kind"])) for m in raw]


def segments_json(segments: Iterable[d.Segment]) -> list[dict[str, str]]:
    return [
        {
            "version": s.package_version_id,
            "kind": s.kind.value,
            "start": s.start.isoformat(),
            "end": s.end.isoformat(),
        }
        for s in segments
    ]


def segments_from_json(raw: Sequence[dict[str, str]]) -> tuple[d.Segment, ...]:
    return tuple(
        d.Segment(
            s["version"],
            d.Kind(s["kind"]),
            datetime.fromisoformat(s["start"]),
            datetime.fromisoformat(s["end"]),
        )
        for s in raw
    )


def _schedule_row(entry: d.Schedule) -> dict[str, Any]:
    return {
        "schedule_id": entry.schedule_id,
        "subscription_id": entry.subscription_id,
        "org_id": entry.org_id,
        "action": entry.action.value,
        "target_package_version_id": entry.target_package_version_id,
        "direction": entry.direction.value if entry.direction else None,
        "effective_time": entry.effective_time,
        "state": entry.state.value,
        "create_time": entry.create_time,
        "resolve_time": entry.resolve_time,
    }


def _schedule(row: Row[Any]) -> d.Schedule:
    return d.Schedule(
        schedule_id=row.schedule_id,
        subscription_id=row.subscription_id,
        org_id=row.org_id,
        action=d.Action(row.action),
        target_package_version_id=row.target_package_version_id,
        direction=d.Direction(row.direction) if row.direction else None,
        effective_time=row.effective_time,
        state=d.ScheduleState(row.state),
        create_time=row.create_time,
        resolve_time=row.resolve_time,
    )


class SubscriptionsRepository(ProjectionQueries):
    def __init__(self, session: AsyncSession, changes: EntitlementChanges | None = None) -> None:
        self.session = session
        self.changes = EntitlementChanges() if changes is None else changes

    # ------------------------------------------------------ subscriptions

    async def live_exists(self, org_id: str, package_id: str) -> bool:
        found = await self.session.scalar(
            select(literal(1))
            .where(
                subscription_table.c.org_id == org_id,
                subscription_table.c.package_id == package_id,
                subscription_table.c.state != d.State.CANCELED.value,
            )
            .limit(1)
        )
        return found is not None

    def _row_values(self, sub: d.Subscription) -> dict[str, Any]:
        return {
            "subscription_id": sub.subscription_id,
            "org_id": sub.org_id,
            "package_id": sub.plan.package_id,
            "package_version_id": sub.plan.package_version_id,
            "state": sub.state.value,
            "billing_anchor": sub.anchor.value,
            "origin_time": sub.origin,
            "start_time": sub.start_time,
            "trial_end_time": sub.trial_end,
            "current_period_start": sub.period_start,
            "current_period_end": sub.period_end,
            "allow_multiple": sub.allow_multiple,
            "external_id": sub.external_id,
            "cancel_time": sub.cancel_time,
            "cancel_reason": sub.cancel_reason,
            "pause_time": sub.pause_time,
            "period_marks": _marks_json(sub.marks),
            "create_time": sub.create_time,
            "update_time": sub.update_time,
        }

    async def add(self, sub: d.Subscription) -> None:
        self.changes.org(sub.org_id)
        try:
            await self.session.execute(subscription_table.insert().values(**self._row_values(sub)))
        except IntegrityError as exc:
            if LIVE_UNIQUE_INDEX in str(exc.orig):
                raise AlreadyExists(
                    message=(
                        f"org {sub.org_id} already has a live subscription to package"
                        f" {sub.plan.package_id}"
                    ),
                    reason="SUBSCRIPTION_ALREADY_EXISTS",
                    metadata={"org_id": sub.org_id, "package_id": sub.plan.package_id},
                ) from None
            if EXTERNAL_ID_UNIQUE_INDEX in str(exc.orig):
                raise AlreadyExists(
                    message=(
                        f"org {sub.org_id} already has a subscription not canceled with"
                        f" external id {sub.external_id!r}"
                    ),
                    reason="SUBSCRIPTION_EXTERNAL_ID_TAKEN",
                    metadata={"org_id": sub.org_id, "external_id": sub.external_id},
                ) from None
            raise
        await self._save_schedules([sub])

    async def save(self, sub: d.Subscription) -> None:
        await self.save_many([sub])

    async def save_many(self, subs: Sequence[d.Subscription]) -> None:
        """Update existing subscriptions and their schedules: one statement
        each, executed for all rows (the billing clock saves a thousand)."""
        if not subs:
            return
        for sub in subs:
            self.changes.org(sub.org_id)
        t = subscription_table
        columns = [c for c in self._row_values(subs[0]) if c != "subscription_id"]
        await self.session.execute(
            t.update()
            .where(t.c.subscription_id == bindparam("b_subscription_id"))
            .values({c: bindparam(f"b_{c}") for c in columns}),
            [{f"b_{k}": v for k, v in self._row_values(sub).items()} for sub in subs],
        )
        await self._save_schedules(subs)

    async def _save_schedules(self, subs: Sequence[d.Subscription]) -> None:
        # Resolved entries first: a new pending entry may replace one of them
        # under the one-pending-per-action index.
        resolved = [entry for sub in subs for entry in sub.resolved]
        pending = [entry for sub in subs for entry in sub.schedules]
        for sub in subs:
            sub.resolved.clear()
        stmt = pg_insert(schedule_table)
        upsert = stmt.on_conflict_do_update(
            index_elements=[schedule_table.c.schedule_id],
            set_={"state": stmt.excluded.state, "resolve_time": stmt.excluded.resolve_time},
        )
        for entries in (resolved, pending):
            if entries:
                await self.session.execute(upsert, [_schedule_row(e) for e in entries])

    async def get(self, subscription_id: str, *, for_update: bool = False) -> d.Subscription | None:
        stmt = select(subscription_table).where(
            subscription_table.c.subscription_id == subscription_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return None
        return (await self._load([row]))[0]

    async def _load(self, rows: Sequence[Row[Any]]) -> list[d.Subscription]:
        plans = await self.plans(r.package_version_id for r in rows)
        ids = [r.subscription_id for r in rows]
        pending: dict[str, list[d.Schedule]] = {i: [] for i in ids}
        if ids:
            for srow in (
                await self.session.execute(
                    select(schedule_table)
                    .where(
                        schedule_table.c.subscription_id.in_(ids),
                        schedule_table.c.state == d.ScheduleState.PENDING.value,
                    )
                    .order_by(schedule_table.c.create_time)
                )
            ).all():
                pending[srow.subscription_id].append(_schedule(srow))
        return [
            d.Subscription(
                subscription_id=r.subscription_id,
                org_id=r.org_id,
                plan=plans[r.package_version_id],
                state=d.State(r.state),
                anchor=d.Anchor(r.billing_anchor),
                origin=r.origin_time,
                start_time=r.start_time,
                trial_end=r.trial_end_time,
                period_start=r.current_period_start,
                period_end=r.current_period_end,
                create_time=r.create_time,
                update_time=r.update_time,
                allow_multiple=r.allow_multiple,
                external_id=r.external_id,
                cancel_time=r.cancel_time,
                cancel_reason=r.cancel_reason,
                pause_time=r.pause_time,
                marks=_marks(r.period_marks),
                schedules=pending[r.subscription_id],
            )
            for r in rows
        ]

    async def list_subscriptions(
        self,
        *,
        org_id: str,
        state: d.State | None,
        package_id: str,
        after: list[Any] | None,
        limit: int,
    ) -> list[d.Subscription]:
        t = subscription_table
        stmt = select(t)
        if org_id:
            stmt = stmt.where(t.c.org_id == org_id)
        if state is not None:
            stmt = stmt.where(t.c.state == state.value)
        if package_id:
            stmt = stmt.where(t.c.package_id == package_id)
        if after:
            at = datetime.fromisoformat(str(after[0]))
            stmt = stmt.where(tuple_(t.c.create_time, t.c.subscription_id) < (at, str(after[1])))
        stmt = stmt.order_by(t.c.create_time.desc(), t.c.subscription_id.desc()).limit(limit)
        rows = (await self.session.execute(stmt)).all()
        return await self._load(rows)

    async def due(self, now: datetime, limit: int | None) -> list[d.Subscription]:
        """Live subscriptions with a period end or trial end at or before ``now``,
        locked; ordered by id so concurrent runs lock in the same order."""
        t = subscription_table
        stmt = (
            select(t)
            .where(
                t.c.state != d.State.CANCELED.value,
                or_(
                    t.c.current_period_end <= now,
                    and_(
                        t.c.state == d.State.TRIALING.value,
                        t.c.trial_end_time <= now,
                    ),
                ),
            )
            .order_by(t.c.subscription_id)
            .with_for_update()
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = (await self.session.execute(stmt)).all()
        return await self._load(rows)

    # ------------------------------------------------------ schedules

    async def schedule(self, schedule_id: str) -> d.Schedule | None:
        row = (
            await self.session.execute(
                select(schedule_table).where(schedule_table.c.schedule_id == schedule_id)
            )
        ).first()
        return _schedule(row) if row else None

    async def schedules(
        self,
        subscription_id: str,
        state: d.ScheduleState | None,
        after: list[Any] | None,
        limit: int,
    ) -> list[d.Schedule]:
        t = schedule_table
        stmt = select(t).where(t.c.subscription_id == subscription_id)
        if state is not None:
            stmt = stmt.where(t.c.state == state.value)
        if after:
            stmt = stmt.where(
                tuple_(t.c.effective_time, t.c.schedule_id)
                < (datetime.fromisoformat(str(after[0])), str(after[1]))
            )
        stmt = stmt.order_by(t.c.effective_time.desc(), t.c.schedule_id.desc()).limit(limit)
        return [_schedule(r) for r in (await self.session.execute(stmt)).all()]

    # ------------------------------------------------------ periods

    async def record_closed(self, periods: Sequence[d.ClosedPeriod]) -> list[d.ClosedPeriod]:
        """Record closed periods; return those closed before (the unique key
        found them), which this call did not record."""
        t = closed_period_table
        recorded: set[tuple[str, datetime]] = set()
        for first in range(0, len(periods), CLOSED_ROWS_PER_INSERT):
            stmt = (
                pg_insert(t)
                .values(
                    [
                        {
                            "subscription_id": p.subscription_id,
                            "period_start": p.start,
                            "org_id": p.org_id,
                            "period_end": p.end,
                            "package_version_id": p.package_version_id,
                            "segments": segments_json(p.segments),
                            "close_time": p.close_time,
                        }
                        for p in periods[first : first + CLOSED_ROWS_PER_INSERT]
                    ]
                )
                .on_conflict_do_nothing()
                .returning(t.c.subscription_id, t.c.period_start)
            )
            rows = await self.session.execute(stmt)
            recorded |= {(r.subscription_id, r.period_start) for r in rows}
        return [p for p in periods if (p.subscription_id, p.start) not in recorded]

    async def closed_periods(
        self, subscription_id: str, before: datetime | None, limit: int
    ) -> list[d.ClosedPeriod]:
        t = closed_period_table
        stmt = select(t).where(t.c.subscription_id == subscription_id)
        if before is not None:
            stmt = stmt.where(t.c.period_start < before)
        stmt = stmt.order_by(t.c.period_start.desc()).limit(limit)
        return [
            d.ClosedPeriod(
                subscription_id=r.subscription_id,
                org_id=r.org_id,
                start=r.period_start,
                end=r.period_end,
                segments=segments_from_json(r.segments),
                close_time=r.close_time,
                package_version_id=r.package_version_id,
            )
            for r in (await self.session.execute(stmt)).all()
        ]

    # ------------------------------------------------------ billing clock

    async def clock_now(self) -> datetime | None:
        value: datetime | None = await self.session.scalar(
            select(billing_clock_table.c.now).where(billing_clock_table.c.clock_id == 1)
        )
        return value

    async def lock_clock(self) -> datetime | None:
        """Serialise clock runs across replicas: the second waits, then finds
        nothing left to close."""
        stmt = pg_insert(billing_clock_table).values(clock_id=1, now=None)
        await self.session.execute(stmt.on_conflict_do_nothing())
        value: datetime | None = await self.session.scalar(
            select(billing_clock_table.c.now)
            .where(billing_clock_table.c.clock_id == 1)
            .with_for_update()
        )
        return value

    async def set_clock(self, now: datetime) -> None:
        await self.session.execute(
            billing_clock_table.update()
            .where(billing_clock_table.c.clock_id == 1)
            .values(now=func.greatest(func.coalesce(billing_clock_table.c.now, now), now))
        )


class SubscriptionsUnitOfWork(UnitOfWork):
    """The kit's unit of work with this service's repository on its session.

    ``on_committed`` hears which orgs' entitlement answers the unit's writes
    may have changed, once it commits; the other replicas hear it from a
    NOTIFY sent in the same transaction (``entitlement_notices``).
    """

    repo: SubscriptionsRepository

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        on_events_committed: Callable[[], None] | None = None,
        on_committed: Callable[[EntitlementChanges], None] | None = None,
        origin: str = "",
    ) -> None:
        super().__init__(database, outbox, on_events_committed)
        self._on_committed = on_committed
        self._channel = notices.channel_for(database.schema)
        # Whose ``on_committed`` this is, so that cache skips the notification.
        self._origin = origin
        self.changes = EntitlementChanges()

    async def commit(self) -> None:
        try:
            if self.changes:
                # Delivered only if this transaction commits, after it.
                await self.session.execute(
                    notices.NOTIFY,
                    {
                        "channel": self._channel,
                        "payload": notices.payload_for(self.changes, self._origin),
                    },
                )
            await super().commit()
        finally:
            # Also when the commit raised: it may have landed before the
            # connection failed, and forgetting an answer too many is harmless.
            if self._on_committed is not None and self.changes:
                self._on_committed(self.changes)

    async def __aenter__(self) -> SubscriptionsUnitOfWork:
        await super().__aenter__()
        self.changes = EntitlementChanges()
        self.repo = SubscriptionsRepository(self.session, self.changes)
        return self
