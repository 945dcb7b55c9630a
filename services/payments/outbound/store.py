"""SQL of outbound webhooks (payments schema): endpoints and deliveries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.keyset import newest_first
from services.payments.outbound.domain import DeliveryState
from services.payments.repository.tables import webhook_delivery_table, webhook_endpoint_table

E = webhook_endpoint_table
D = webhook_delivery_table


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    org_id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    secret: str
    previous_secret: str
    previous_secret_expire_time: datetime | None
    enabled: bool
    disabled_reason: str
    failing_since: datetime | None
    create_time: datetime
    update_time: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        keep_previous = (
            self.previous_secret
            and self.previous_secret_expire_time is not None
            and self.previous_secret_expire_time > now
        )
        return [self.secret, self.previous_secret] if keep_previous else [self.secret]


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    org_id: str
    event_id: str
    event_type: str
    payload: str
    state: DeliveryState
    attempt_count: int
    next_attempt_time: datetime | None
    first_attempt_time: datetime | None
    last_attempt_time: datetime | None
    last_status_code: int | None
    last_response_ms: int | None
    last_error: str
    create_time: datetime


def _endpoint(r: Row[Any]) -> Endpoint:
    return _endpoint_from(dict(r._mapping))


def _delivery(r: Row[Any]) -> Delivery:
    m = r._mapping
    return Delivery(
        delivery_id=m["delivery_id"],
        endpoint_id=m["endpoint_id"],
        org_id=m["org_id"],
        event_id=m["event_id"],
        event_type=m["event_type"],
        payload=m["payload"],
        state=DeliveryState(m["state"]),
        attempt_count=m["attempt_count"],
        next_attempt_time=m["next_attempt_time"],
        first_attempt_time=m["first_attempt_time"],
        last_attempt_time=m["last_attempt_time"],
        last_status_code=m["last_status_code"],
        last_response_ms=m["last_response_ms"],
        last_error=m["last_error"],
        create_time=m["create_time"],
    )


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---------------------------------------------------------------- endpoints

    async def insert_endpoint(self, values: Mapping[str, Any]) -> Endpoint:
        row = (await self.session.execute(pg_insert(E).values(**values).returning(E))).one()
        return _endpoint(row)

    async def endpoint(
        self, endpoint_id: str, org_id: str = "", *, lock: bool = False
    ) -> Endpoint | None:
        """A live endpoint; ``org_id`` set narrows to that org (another org's is absent)."""
        stmt = select(E).where(E.c.endpoint_id == endpoint_id, E.c.deleted.is_(False))
        if org_id:
            stmt = stmt.where(E.c.org_id == org_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return _endpoint(row) if row is not None else None

    async def endpoints(
        self, org_id: str, after: list[Any] | None, limit: int, *, enabled_only: bool = False
    ) -> list[Endpoint]:
        stmt = select(E).where(E.c.org_id == org_id, E.c.deleted.is_(False))
        if enabled_only:
            stmt = stmt.where(E.c.enabled.is_(True))
        stmt = newest_first(stmt, E.c.create_time, E.c.endpoint_id, after, limit)
        return [_endpoint(r) for r in await self.session.execute(stmt)]

    async def update_endpoint(self, endpoint_id: str, values: Mapping[str, Any]) -> Endpoint:
        stmt = update(E).where(E.c.endpoint_id == endpoint_id).values(**values).returning(E)
        return _endpoint((await self.session.execute(stmt)).one())

    # --------------------------------------------------------------- deliveries

    async def insert_deliveries(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """One row per (event, endpoint); a replayed event adds none."""
        if not rows:
            return 0
        result = await self.session.execute(
            pg_insert(D)
            .values(list(rows))
            .on_conflict_do_nothing(index_elements=["event_id", "endpoint_id"])
            .returning(D.c.delivery_id)
        )
        return len(result.all())

    async def lease_due(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[Delivery, Endpoint]]:
        """Due pending deliveries of enabled endpoints, leased to the caller
        (``SKIP LOCKED``: two dispatchers never send the same one at once)."""
        due = (
            select(D.c.delivery_id)
            .join(E, E.c.endpoint_id == D.c.endpoint_id)
            .where(
                D.c.state == DeliveryState.PENDING.value,
                D.c.next_attempt_time <= now,
                or_(D.c.lease_until.is_(None), D.c.lease_until < now),
                E.c.enabled.is_(True),
                E.c.deleted.is_(False),
            )
            .order_by(D.c.next_attempt_time)
            .limit(limit)
            .with_for_update(of=D, skip_locked=True)
        )
        ids = [r[0] for r in await self.session.execute(due)]
        if not ids:
            return []
        await self.session.execute(
            update(D).where(D.c.delivery_id.in_(ids)).values(lease_until=lease_until)
        )
        rows = await self.session.execute(
            select(D, *[c.label(f"e_{c.name}") for c in E.c])
            .join(E, E.c.endpoint_id == D.c.endpoint_id)
            .where(D.c.delivery_id.in_(ids))
            .order_by(D.c.next_attempt_time)
        )
        out: list[tuple[Delivery, Endpoint]] = []
        for r in rows:
            m = r._mapping
            endpoint_row = {c.name: m[f"e_{c.name}"] for c in E.c}
            out.append((_delivery(r), _endpoint_from(endpoint_row)))
        return out

    async def delivery(
        self, delivery_id: str, org_id: str = "", *, lock: bool = False
    ) -> Delivery | None:
        stmt = select(D).where(D.c.delivery_id == delivery_id)
        if org_id:
            stmt = stmt.where(D.c.org_id == org_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return _delivery(row) if row is not None else None

    async def deliveries(
        self, endpoint_id: str, after: list[Any] | None, limit: int
    ) -> list[Delivery]:
        stmt = select(D).where(D.c.endpoint_id == endpoint_id)
        stmt = newest_first(stmt, D.c.create_time, D.c.delivery_id, after, limit)
        return [_delivery(r) for r in await self.session.execute(stmt)]

    async def update_delivery(self, delivery_id: str, values: Mapping[str, Any]) -> Delivery:
        stmt = update(D).where(D.c.delivery_id == delivery_id).values(**values).returning(D)
        return _delivery((await self.session.execute(stmt)).one())


def _endpoint_from(m: Mapping[str, Any]) -> Endpoint:
    return Endpoint(
        endpoint_id=m["endpoint_id"],
        org_id=m["org_id"],
        url=m["url"],
        description=m["description"],
        event_types=tuple(m["event_types"]),
        secret=m["secret"],
        previous_secret=m["previous_secret"],
        previous_secret_expire_time=m["previous_secret_expire_time"],
        enabled=m["enabled"],
        disabled_reason=m["disabled_reason"],
        failing_since=m["failing_since"],
        create_time=m["create_time"],
        update_time=m["update_time"],
    )
