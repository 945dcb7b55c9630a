"""Local projections fed by events: the catalog's published versions and the
usage aggregates behind entitlement checks. Read without calling the
producers: these sit on the hot path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Row,
    Select,
    Text,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.subscriptions import domain as d
from services.subscriptions.repository.tables import (
    feature_limit_table,
    package_table,
    package_version_table,
    subscription_table,
    usage_aggregate_table,
)


def _apply_usage_statement() -> Any:
    stmt = pg_insert(usage_aggregate_table)
    # A late, older revision must not overwrite a newer total.
    return stmt.on_conflict_do_update(
        index_elements=[
            usage_aggregate_table.c.subscription_id,
            usage_aggregate_table.c.metric_code,
            usage_aggregate_table.c.period_start,
        ],
        set_={
            "value": stmt.excluded.value,
            "revision": stmt.excluded.revision,
            "update_time": func.now(),
        },
        where=usage_aggregate_table.c.revision < stmt.excluded.revision,
    )


# Built once: every usage total arriving runs it, and building it per call
# cost more than executing it.
_APPLY_USAGE = _apply_usage_statement()


@dataclass(frozen=True)
class VersionRecord:
    plan: d.Plan
    archived: bool
    name: str


@dataclass(frozen=True)
class EntitlementRow:
    subscription_id: str
    limit: d.FeatureLimit | None
    used: Decimal


@dataclass
class EntitlementChanges:
    """Whose entitlement answers a unit of work's writes may have changed.

    The repository records it beside each write to the rows CheckEntitlement
    reads (subscriptions, usage totals, feature limits), so a commit can
    forget exactly those cached answers and no others.
    """

    orgs: set[str] = field(default_factory=set)
    # A plan's feature limits changed: any org on it may answer differently.
    every_org: bool = False

    def org(self, org_id: str) -> None:
        self.orgs.add(org_id)

    def everyone(self) -> None:
        self.every_org = True

    def __bool__(self) -> bool:
        return self.every_org or bool(self.orgs)


def _plan(row: Row[Any]) -> d.Plan:
    return d.Plan(
        package_version_id=row.package_version_id,
        package_id=row.package_id,
        package_code=row.package_code,
        version=row.version,
        currency_code=row.currency_code,
        interval=d.Interval(row.billing_interval),
        base_fee=Decimal(row.base_fee),
        trial_days=row.trial_days,
    )


class ProjectionQueries:
    session: AsyncSession
    changes: EntitlementChanges

    # ------------------------------------------------------ catalog projection

    async def upsert_version(
        self,
        plan: d.Plan,
        *,
        name: str,
        base_fee_timing: str,
        metric_codes: Sequence[str],
        publish_time: datetime | None,
        limits: Sequence[d.FeatureLimit],
    ) -> None:
        values = {
            "package_version_id": plan.package_version_id,
            "package_id": plan.package_id,
            "package_code": plan.package_code,
            "version": plan.version,
            "name": name,
            "currency_code": plan.currency_code,
            "billing_interval": plan.interval.value,
            "base_fee": plan.base_fee,
            "base_fee_timing": base_fee_timing,
            "trial_days": plan.trial_days,
            "metric_codes": list(metric_codes),
            "publish_time": publish_time,
        }
        self.changes.everyone()
        # Published versions never change; a replay rewrites the same values.
        stmt = pg_insert(package_version_table).values(**values)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[package_version_table.c.package_version_id],
                set_={k: stmt.excluded[k] for k in values if k != "package_version_id"},
            )
        )
        await self.session.execute(
            feature_limit_table.delete().where(
                feature_limit_table.c.package_version_id == plan.package_version_id
            )
        )
        if limits:
            await self.session.execute(
                feature_limit_table.insert(),
                [
                    {
                        "package_version_id": plan.package_version_id,
                        "feature_key": lim.feature_key,
                        "unlimited": lim.unlimited,
                        "limit_value": lim.limit,
                        "hard": lim.hard,
                        "resets_each_period": lim.resets_each_period,
                        "metric_code": lim.metric_code,
                    }
                    for lim in limits
                ],
            )
        pkg = pg_insert(package_table).values(
            package_id=plan.package_id,
            package_code=plan.package_code,
            latest_version_id=plan.package_version_id,
            latest_version=plan.version,
        )
        newer = package_table.c.latest_version < pkg.excluded.latest_version
        await self.session.execute(
            pkg.on_conflict_do_update(
                index_elements=[package_table.c.package_id],
                set_={
                    "package_code": pkg.excluded.package_code,
                    # Late deliveries of older versions never move "latest" back.
                    "latest_version_id": case(
                        (newer, pkg.excluded.latest_version_id),
                        else_=package_table.c.latest_version_id,
                    ),
                    "latest_version": func.greatest(
                        package_table.c.latest_version, pkg.excluded.latest_version
                    ),
                    "update_time": func.now(),
                },
            )
        )

    async def archive_package(self, package_id: str, package_code: str) -> None:
        # Rare, and no org is named: forgetting every answer is the safe side.
        self.changes.everyone()
        stmt = pg_insert(package_table).values(
            package_id=package_id, package_code=package_code, archived=True
        )
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[package_table.c.package_id], set_={"archived": True}
            )
        )

    async def version(self, package_version_id: str) -> VersionRecord | None:
        row = (
            await self.session.execute(
                select(package_version_table, package_table.c.archived)
                .join(
                    package_table,
                    package_table.c.package_id == package_version_table.c.package_id,
                )
                .where(package_version_table.c.package_version_id == package_version_id)
            )
        ).first()
        if row is None:
            return None
        return VersionRecord(_plan(row), row.archived, row.name)

    async def package(self, package_id: str) -> Row[Any] | None:
        return (
            await self.session.execute(
                select(package_table).where(package_table.c.package_id == package_id)
            )
        ).first()

    async def plans(self, ids: Iterable[str]) -> dict[str, d.Plan]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = (
            await self.session.execute(
                select(package_version_table).where(
                    package_version_table.c.package_version_id.in_(wanted)
                )
            )
        ).all()
        return {r.package_version_id: _plan(r) for r in rows}

    # ------------------------------------------------------ usage projection

    async def apply_usage(
        self,
        *,
        subscription_id: str,
        org_id: str,
        metric_code: str,
        period_start: datetime,
        period_end: datetime,
        value: Decimal,
        revision: int,
    ) -> None:
        self.changes.org(org_id)
        await self.session.execute(
            _APPLY_USAGE,
            {
                "subscription_id": subscription_id,
                "org_id": org_id,
                "metric_code": metric_code,
                "period_start": period_start,
                "period_end": period_end,
                "value": value,
                "revision": revision,
            },
        )

    async def entitlement(self, org_id: str, feature_key: str) -> EntitlementRow | None:
        """One statement: the org's entitled subscriptions, the feature's limit on
        each pinned version and this period's usage of its metric."""
        stmt = _ENTITLEMENT.params(org_id=org_id, feature_key=feature_key)
        row = (await self.session.execute(stmt)).first()
        return None if row is None else _entitlement_row(row)

    async def entitlements(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], EntitlementRow | None]:
        """``entitlement`` for many (org, feature) pairs in one statement."""
        if not keys:
            return {}
        stmt = _ENTITLEMENTS.params(
            key_org_ids=[org for org, _ in keys], key_feature_keys=[f for _, f in keys]
        )
        return {
            (row.key_org_id, row.key_feature_key): (
                None if row.subscription_id is None else _entitlement_row(row)
            )
            for row in await self.session.execute(stmt)
        }


def _entitlement_row(row: Row[Any]) -> EntitlementRow:
    limit = None
    if row.feature_key is not None:
        limit = d.FeatureLimit(
            feature_key=row.feature_key,
            unlimited=row.unlimited,
            limit=Decimal(row.limit_value) if row.limit_value is not None else None,
            hard=row.hard,
            resets_each_period=row.resets_each_period,
            metric_code=row.metric_code,
        )
    return EntitlementRow(row.subscription_id, limit, Decimal(row.used or 0))


def _entitlement_statement(
    org_id: ColumnElement[str], feature_key: ColumnElement[str]
) -> Select[Any]:
    # Built once: CheckEntitlement is the hottest read of the suite, and
    # building this select per call cost more CPU than running it.
    s, fl, u = subscription_table, feature_limit_table, usage_aggregate_table
    used = (
        select(func.coalesce(func.sum(u.c.value), 0))
        .where(
            u.c.subscription_id == s.c.subscription_id,
            u.c.metric_code == fl.c.metric_code,
            or_(
                fl.c.resets_each_period.is_(False),
                u.c.period_start == s.c.current_period_start,
            ),
        )
        .scalar_subquery()
    )
    return (
        select(
            s.c.subscription_id,
            fl.c.feature_key,
            fl.c.unlimited,
            fl.c.limit_value,
            fl.c.hard,
            fl.c.resets_each_period,
            fl.c.metric_code,
            used.label("used"),
        )
        .select_from(
            s.outerjoin(
                fl,
                and_(
                    fl.c.package_version_id == s.c.package_version_id,
                    fl.c.feature_key == feature_key,
                ),
            )
        )
        .where(
            s.c.org_id == org_id,
            s.c.state.in_([st.value for st in d.ENTITLED_STATES]),
        )
        # With several subscriptions, the most generous one answers.
        .order_by(
            fl.c.feature_key.is_(None),
            fl.c.unlimited.desc(),
            fl.c.limit_value.desc().nulls_last(),
            s.c.create_time,
        )
        .limit(1)
    )


def _entitlements_statement() -> Select[Any]:
    # The same select per (org, feature) pair, laterally joined to the pairs.
    keys = (
        func.unnest(
            bindparam("key_org_ids", type_=ARRAY(Text)),
            bindparam("key_feature_keys", type_=ARRAY(Text)),
        )
        .table_valued("org_id", "feature_key")
        .render_derived(name="k", with_types=False)
    )
    one = _entitlement_statement(keys.c.org_id, keys.c.feature_key).lateral("e")
    return select(
        keys.c.org_id.label("key_org_id"), keys.c.feature_key.label("key_feature_key"), one
    ).select_from(keys.outerjoin(one, true()))


_ENTITLEMENT = _entitlement_statement(bindparam("org_id"), bindparam("feature_key"))
_ENTITLEMENTS = _entitlements_statement()
