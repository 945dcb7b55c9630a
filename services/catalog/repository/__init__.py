"""SQL for the catalog schema (SQLAlchemy 2 Core, async).

``CatalogRepository`` holds every query of the service; the tables are in
``tables.py`` (re-exported ``metadata`` is what Alembic and the runtime read),
the row <-> domain mapping in ``rows.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog.domain.metrics import Metric
from services.catalog.domain.packages import Charge, MetricRef, Package, PackageVersion
from services.catalog.domain.pricing import model_of, properties_dict
from services.catalog.domain.values import MetricState, PackageState, VersionState
from services.catalog.repository import rows
from services.catalog.repository.tables import (
    SCHEMA,
    charge_table,
    metadata,
    metric_table,
    package_table,
    version_table,
)

__all__ = ["SCHEMA", "CatalogRepository", "metadata"]

m, p, pv, c = metric_table.c, package_table.c, version_table.c, charge_table.c


def _metric_used_by_published() -> Any:
    """SQL truth of ``Metric.in_use``: a published version charges or limits by it."""
    charged = (
        select(literal(1))
        .select_from(
            charge_table.join(version_table, c.package_version_id == pv.package_version_id)
        )
        .where(c.metric_id == m.metric_id, pv.state == VersionState.PUBLISHED.value)
    )
    limited = select(literal(1)).where(
        pv.state == VersionState.PUBLISHED.value,
        pv.feature_limits.op("@>")(
            func.jsonb_build_array(func.jsonb_build_object("metric_code", m.code))
        ),
    )
    return or_(exists(charged), exists(limited))


class CatalogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- metrics ---------------------------------------------------------------

    def _metric_select(self) -> Any:
        return select(metric_table, _metric_used_by_published().label("in_use"))

    async def get_metric(self, metric_id: str, *, for_update: bool = False) -> Metric | None:
        query = self._metric_select().where(m.metric_id == metric_id)
        if for_update:
            query = query.with_for_update(of=metric_table)
        row = (await self.session.execute(query)).first()
        return rows.metric(row) if row else None

    async def add_metric(self, metric: Metric) -> bool:
        """False when the code is taken, even by a concurrent insert (no exception,
        so the transaction stays usable)."""
        result = await self.session.execute(
            pg_insert(metric_table)
            .values(**rows.metric_values(metric))
            .on_conflict_do_nothing(index_elements=["code"])
            .returning(m.metric_id)
        )
        return result.first() is not None

    async def lock_metric_names(self) -> None:
        """Serialise changes to the live metrics' names (codes and aliases) until
        commit: uniqueness across a code column and an array column has no
        constraint to lean on, and metric edits are rare."""
        await self.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtext("catalog.metric_names")))
        )

    async def names_taken(self, names: Sequence[str], *, except_id: str = "") -> dict[str, str]:
        """Which of ``names`` a live metric other than ``except_id`` already
        answers to (as its code or an alias), each with that metric's code."""
        if not names:
            return {}
        wanted = list(names)
        query = select(m.code, m.aliases).where(
            m.state == MetricState.ACTIVE.value,
            m.metric_id != except_id,
            or_(m.code == func.any(wanted), m.aliases.overlap(wanted)),
        )
        taken: dict[str, str] = {}
        for code, aliases in (await self.session.execute(query)).all():
            for name in (code, *aliases):
                if name in wanted:
                    taken.setdefault(name, code)
        return taken

    async def save_metric(self, metric: Metric) -> None:
        values = rows.metric_values(metric)
        del values["metric_id"], values["code"], values["create_time"]
        await self.session.execute(
            update(metric_table).where(m.metric_id == metric.metric_id).values(**values)
        )

    async def list_metrics(
        self, state: MetricState | None, after_code: str | None, limit: int
    ) -> list[Metric]:
        query = self._metric_select().order_by(m.code).limit(limit)
        if state is not None:
            query = query.where(m.state == state.value)
        if after_code is not None:
            query = query.where(m.code > after_code)
        return [rows.metric(row) for row in (await self.session.execute(query)).all()]

    async def metric_refs(
        self, ids: Iterable[str], codes: Iterable[str], *, lock: bool = True
    ) -> tuple[dict[str, MetricRef], dict[str, MetricRef]]:
        """Metrics by id and by code. ``lock`` holds them (FOR SHARE) so a
        concurrent ArchiveMetric waits for this transaction instead of
        archiving a metric a version is being built on."""
        ids, codes = list(ids), list(codes)
        if not ids and not codes:
            return {}, {}
        query = select(m.metric_id, m.code, m.name, m.state).where(
            or_(m.metric_id.in_(ids), m.code.in_(codes))
        )
        if lock:
            query = query.with_for_update(read=True)
        refs = [
            MetricRef(r.metric_id, r.code, r.name, MetricState(r.state))
            for r in (await self.session.execute(query)).all()
        ]
        return {r.metric_id: r for r in refs}, {r.code: r for r in refs}

    async def active_packages_using(self, metric: Metric) -> list[str]:
        """Codes of non-archived packages whose current published version uses ``metric``."""
        uses = or_(
            exists(
                select(literal(1)).where(
                    c.package_version_id == pv.package_version_id, c.metric_id == metric.metric_id
                )
            ),
            pv.feature_limits.op("@>")(
                func.jsonb_build_array(func.jsonb_build_object("metric_code", metric.code))
            ),
        )
        query = (
            select(p.code)
            .select_from(
                package_table.join(version_table, pv.package_version_id == p.published_version_id)
            )
            .where(p.state != PackageState.ARCHIVED.value, uses)
            .order_by(p.code)
        )
        return list((await self.session.scalars(query)).all())

    # -- packages --------------------------------------------------------------

    async def get_package(self, package_id: str, *, for_update: bool = False) -> Package | None:
        query = select(package_table).where(p.package_id == package_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return rows.package(row) if row else None

    async def add_package(self, package: Package) -> bool:
        """False when the code is taken (see ``add_metric``)."""
        result = await self.session.execute(
            pg_insert(package_table)
            .values(**rows.package_values(package))
            .on_conflict_do_nothing(index_elements=["code"])
            .returning(p.package_id)
        )
        return result.first() is not None

    async def save_package(self, package: Package) -> None:
        values = rows.package_values(package)
        del values["package_id"], values["code"], values["create_time"]
        await self.session.execute(
            update(package_table).where(p.package_id == package.package_id).values(**values)
        )

    async def list_packages(
        self,
        *,
        states: Sequence[PackageState],
        currency_code: str,
        after_code: str | None,
        limit: int,
    ) -> list[Package]:
        query = select(package_table).order_by(p.code).limit(limit)
        if states:
            query = query.where(p.state.in_([s.value for s in states]))
        if currency_code:
            query = query.where(
                exists(
                    select(literal(1)).where(
                        pv.package_version_id == p.published_version_id,
                        pv.currency_code == currency_code,
                    )
                )
            )
        if after_code is not None:
            query = query.where(p.code > after_code)
        return [rows.package(row) for row in (await self.session.execute(query)).all()]

    # -- versions --------------------------------------------------------------

    async def add_version(self, version: PackageVersion) -> None:
        await self.session.execute(insert(version_table).values(**rows.version_values(version)))
        await self._insert_charges(version)

    async def save_draft(self, version: PackageVersion) -> None:
        """Replace a draft's content; charges are replaced whole, as the API says."""
        values = rows.version_values(version)
        for key in ("package_version_id", "package_id", "create_time"):
            del values[key]
        await self.session.execute(
            update(version_table)
            .where(pv.package_version_id == version.package_version_id)
            .values(**values)
        )
        await self.session.execute(
            charge_table.delete().where(c.package_version_id == version.package_version_id)
        )
        await self._insert_charges(version)

    async def _insert_charges(self, version: PackageVersion) -> None:
        records = [
            {
                "package_version_id": version.package_version_id,
                "position": i,
                "charge_id": charge.charge_id,
                "metric_id": charge.metric_id,
                "display_name": charge.display_name,
                "model": model_of(charge.properties).value,
                "properties": properties_dict(charge.properties),
                "minimum_amount": charge.minimum_amount,
            }
            for i, charge in enumerate(version.content.charges)
        ]
        if records:
            await self.session.execute(insert(charge_table), records)

    async def get_version(self, package_version_id: str) -> PackageVersion | None:
        found = await self._versions(pv.package_version_id == package_version_id)
        return found[0] if found else None

    async def draft_of(self, package_id: str) -> PackageVersion | None:
        found = await self._versions(
            and_(pv.package_id == package_id, pv.state == VersionState.DRAFT.value)
        )
        return found[0] if found else None

    async def versions_by_id(self, ids: Iterable[str]) -> dict[str, PackageVersion]:
        wanted = [i for i in ids if i]
        if not wanted:
            return {}
        return {
            v.package_version_id: v for v in await self._versions(pv.package_version_id.in_(wanted))
        }

    async def drafts_of(self, package_ids: Iterable[str]) -> dict[str, PackageVersion]:
        ids = list(package_ids)
        if not ids:
            return {}
        found = await self._versions(
            and_(pv.package_id.in_(ids), pv.state == VersionState.DRAFT.value)
        )
        return {v.package_id: v for v in found}

    async def list_versions(
        self, package_id: str, before_version: int | None, limit: int
    ) -> list[PackageVersion]:
        where = pv.package_id == package_id
        if before_version is not None:
            where = and_(where, pv.version < before_version)
        return await self._versions(where, order_desc=True, limit=limit)

    async def latest_version_number(self, package_id: str) -> int:
        found = await self.session.scalar(
            select(func.coalesce(func.max(pv.version), 0)).where(pv.package_id == package_id)
        )
        return int(found or 0)

    async def publish(self, draft: PackageVersion, at: datetime) -> None:
        await self.session.execute(
            update(version_table)
            .where(pv.package_version_id == draft.package_version_id)
            .values(state=VersionState.PUBLISHED.value, publish_time=at, update_time=at)
        )

    async def _versions(
        self, where: Any, *, order_desc: bool = False, limit: int | None = None
    ) -> list[PackageVersion]:
        query = (
            select(version_table, p.code.label("package_code"))
            .select_from(version_table.join(package_table, p.package_id == pv.package_id))
            .where(where)
            .order_by(pv.version.desc() if order_desc else pv.version)
        )
        if limit is not None:
            query = query.limit(limit)
        found = (await self.session.execute(query)).all()
        if not found:
            return []
        ids = [r.package_version_id for r in found]
        charge_rows = (
            await self.session.execute(
                select(charge_table, m.code.label("metric_code"))
                .select_from(charge_table.join(metric_table, m.metric_id == c.metric_id))
                .where(c.package_version_id.in_(ids))
                .order_by(c.package_version_id, c.position)
            )
        ).all()
        charges: dict[str, list[Charge]] = {}
        for row in charge_rows:
            charges.setdefault(row.package_version_id, []).append(rows.charge(row))
        return [rows.version(r, tuple(charges.get(r.package_version_id, ()))) for r in found]
