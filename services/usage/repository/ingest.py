"""The bulk ingestion path: a batch of validated events in one statement.

Rows are staged (asyncpg COPY into a session temp table for large batches,
``unnest`` of column arrays for small ones: both are one round trip), then a
single statement with data-modifying CTEs:

1. inserts them into ``usage_event`` with ``ON CONFLICT (org_id,
   idempotency_key) DO NOTHING RETURNING``, so only rows this transaction
   really inserted come back; a concurrent transaction inserting the same key
   waits on the unique index and then skips it, so a key is counted by exactly
   one transaction whatever the race;
2. adds the new distinct values of unique_count metrics to
   ``aggregate_unique_value`` (again DO NOTHING RETURNING: only new ones count);
3. folds exactly the returned rows, grouped per aggregate, into
   ``usage_aggregate`` with ``ON CONFLICT DO UPDATE``;
4. answers the staged keys the insert did not return: the duplicates.

Every step processes rows in key order, so two batches with overlapping keys
or aggregates lock in the same order and cannot deadlock each other. The raw
table is never re-read to keep aggregates current.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.usage.domain import (
    Aggregation,
    MetricView,
    PeriodView,
    SubscriptionState,
    SubscriptionView,
    ValidEvent,
)

STAGE_COLUMNS = (
    "org_id",
    "idempotency_key",
    "metric_code",
    "aggregation",
    "subscription_id",
    "period_start",
    "period_end",
    "event_time",
    "value",
    "unique_value",
    "properties",
)

# Times are staged as integer microseconds since the Unix epoch: asyncpg's
# timestamptz encoder cost about 2 µs per value (three per event, most of the
# COPY), a bigint a small fraction of that. _AT turns them back, exactly.
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS usage_stage (
    org_id text, idempotency_key text, metric_code text, aggregation text,
    subscription_id text, period_start bigint, period_end bigint,
    event_time bigint, value numeric, unique_value text, properties text
) ON COMMIT DELETE ROWS
"""

# Driver connections that created the stage table when they opened, outside any
# transaction, so it lasts as long as they do: their batches skip the DDL round
# trip. Others (opened before the listener, e.g. the start-up check) run it per
# batch, inside the batch's transaction, as is always safe.
_STAGED: weakref.WeakSet[Any] = weakref.WeakSet()


async def _create_stage_table(driver: Any) -> None:
    if driver.is_in_transaction():  # a rollback would drop it: stay on the per-batch DDL
        return
    await driver.execute(_STAGE_DDL)
    _STAGED.add(driver)


def stage_on_connect(engine: AsyncEngine) -> None:
    """Create the stage table on every new connection of ``engine``, once."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(_create_stage_table)

    event.listen(engine.sync_engine, "connect", on_connect)


# Microseconds since the epoch as timestamptz with integer arithmetic only: whole
# seconds, then the rest (each product is exact in interval_mul's double for
# every instant a Timestamp can hold; one product of x microseconds would not be
# beyond 2^53 µs, about the years 1685 to 2255).
_AT = (
    "('epoch'::timestamptz + ({col} / 1000000) * interval '1 second'"
    " + ({col} % 1000000) * interval '1 microsecond')"
)
_SOURCE_COLUMNS = (
    "org_id, idempotency_key, metric_code, aggregation, subscription_id, "
    + ", ".join(
        f"{_AT.format(col=col)} AS {col}" for col in ("period_start", "period_end", "event_time")
    )
    + ", value, unique_value, properties"
)

_UNNEST_SOURCE = f"""
SELECT {_SOURCE_COLUMNS} FROM unnest(
    $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[],
    $8::int8[], $9::int8[], $10::numeric[], $11::text[], $12::text[]
) AS s(org_id, idempotency_key, metric_code, aggregation, subscription_id,
       period_start, period_end, event_time, value, unique_value, properties)
"""

_COPY_SOURCE = f"SELECT {_SOURCE_COLUMNS} FROM usage_stage"

_INGEST = """
WITH src AS ({source}),
ins AS (
    INSERT INTO usage_event AS e (org_id, idempotency_key, metric_code, subscription_id,
        period_start, event_time, value, unique_value, properties, received_at)
    SELECT org_id, idempotency_key, metric_code, subscription_id, period_start, event_time,
        value, unique_value, properties::jsonb, $1
    FROM src
    ORDER BY org_id, idempotency_key
    ON CONFLICT (org_id, idempotency_key) DO NOTHING
    RETURNING e.org_id, e.idempotency_key, e.metric_code, e.subscription_id, e.period_start,
        e.event_time, e.value, e.unique_value
),
new_unique AS (
    INSERT INTO aggregate_unique_value AS u (subscription_id, metric_code, period_start, value)
    SELECT DISTINCT subscription_id, metric_code, period_start, unique_value
    FROM ins WHERE unique_value IS NOT NULL
    ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING u.subscription_id, u.metric_code, u.period_start
),
unique_counts AS (
    SELECT subscription_id, metric_code, period_start, count(*) AS n
    FROM new_unique GROUP BY 1, 2, 3
),
summary AS (
    SELECT i.subscription_id, i.metric_code, i.period_start,
        min(i.org_id) AS org_id, min(s.aggregation) AS aggregation,
        min(s.period_end) AS period_end,
        count(*) AS n, sum(i.value) AS total, max(i.value) AS top,
        (array_agg(i.value ORDER BY i.event_time DESC, i.idempotency_key DESC))[1]
            AS latest_value,
        max(i.event_time) AS latest_time,
        (array_agg(i.idempotency_key ORDER BY i.event_time DESC, i.idempotency_key DESC))[1]
            AS latest_key
    FROM ins i JOIN src s USING (org_id, idempotency_key)
    GROUP BY 1, 2, 3
),
agg AS (
    INSERT INTO usage_aggregate AS a (subscription_id, metric_code, period_start, org_id,
        aggregation, period_end, value, event_count, latest_time, latest_key, frozen,
        revision, emitted_revision, updated_at)
    SELECT m.subscription_id, m.metric_code, m.period_start, m.org_id, m.aggregation,
        m.period_end,
        CASE m.aggregation
            WHEN 'count' THEN m.n
            WHEN 'sum' THEN m.total
            WHEN 'max' THEN m.top
            WHEN 'unique_count' THEN coalesce(u.n, 0)
            ELSE m.latest_value
        END,
        m.n, m.latest_time, m.latest_key, false, 1, 0, $1
    FROM summary m LEFT JOIN unique_counts u USING (subscription_id, metric_code, period_start)
    ORDER BY 1, 2, 3
    ON CONFLICT (subscription_id, metric_code, period_start) DO UPDATE SET
        value = CASE a.aggregation
            WHEN 'max' THEN greatest(a.value, excluded.value)
            WHEN 'latest' THEN CASE
                WHEN (excluded.latest_time, excluded.latest_key) > (a.latest_time, a.latest_key)
                THEN excluded.value ELSE a.value END
            ELSE a.value + excluded.value
        END,
        event_count = a.event_count + excluded.event_count,
        latest_time = CASE
            WHEN (excluded.latest_time, excluded.latest_key) > (a.latest_time, a.latest_key)
            THEN excluded.latest_time ELSE a.latest_time END,
        latest_key = CASE
            WHEN (excluded.latest_time, excluded.latest_key) > (a.latest_time, a.latest_key)
            THEN excluded.latest_key ELSE a.latest_key END,
        revision = a.revision + 1,
        updated_at = excluded.updated_at
    RETURNING 1
)
SELECT s.org_id, s.idempotency_key FROM src s
WHERE NOT EXISTS (
    SELECT 1 FROM ins i WHERE i.org_id = s.org_id AND i.idempotency_key = s.idempotency_key
)
"""

_INGEST_UNNEST = _INGEST.format(source=_UNNEST_SOURCE)
_INGEST_COPY = _INGEST.format(source=_COPY_SOURCE)


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, inside the session's transaction.

    SQLAlchemy's asyncpg adapter opens the server-side transaction lazily, on
    its first statement; raw statements before that would each autocommit
    (dropping locks, and the staged rows with ON COMMIT DELETE ROWS). One
    trivial statement through the session makes it begin.
    """
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if not driver.is_in_transaction():
        await session.execute(text("SELECT 1"))
    if not driver.is_in_transaction():
        raise RuntimeError("usage ingestion needs an open transaction")
    return driver


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_microseconds(at: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch (exact)."""
    return (at - _EPOCH) // _MICROSECOND


def _records(events: Sequence[ValidEvent]) -> list[tuple[Any, ...]]:
    # A batch's events share a few period bounds and often their times: each
    # distinct instant is converted once (lookups inline: three per event).
    micros: dict[datetime, int] = {}
    known = micros.get
    records: list[tuple[Any, ...]] = []
    append = records.append
    for e in events:
        start, end, at = e.period_start, e.period_end, e.event_time
        start_us = known(start)
        if start_us is None:
            start_us = micros[start] = epoch_microseconds(start)
        end_us = known(end)
        if end_us is None:
            end_us = micros[end] = epoch_microseconds(end)
        at_us = known(at)
        if at_us is None:
            at_us = micros[at] = epoch_microseconds(at)
        append(
            (
                e.org_id,
                e.idempotency_key,
                e.metric_code,
                # A StrEnum member is the str itself; ``.value`` is a slow descriptor per row.
                e.aggregation,
                e.subscription_id,
                start_us,
                end_us,
                at_us,
                e.value,
                e.unique_value,
                json.dumps(dict(e.properties), separators=(",", ":")) if e.properties else "{}",
            )
        )
    return records


async def store_events(
    session: AsyncSession, events: Sequence[ValidEvent], *, now: datetime, copy_threshold: int
) -> set[tuple[str, str]]:
    """Store and aggregate ``events`` (distinct keys); return the (org, key) pairs
    that were stored already: duplicates, counted before. Every other event was
    inserted and counted now.

    Only those come back (usually none): returning every inserted key cost
    about a microsecond per event to decode and collect.
    """
    if not events:
        return set()
    driver = await driver_connection(session)
    records = _records(events)
    if len(records) >= copy_threshold:
        if driver not in _STAGED:
            await driver.execute(_STAGE_DDL)
        await driver.copy_records_to_table(
            "usage_stage", records=records, columns=list(STAGE_COLUMNS)
        )
        rows = await driver.fetch(_INGEST_COPY, now)
    else:
        columns = [list(col) for col in zip(*records, strict=True)]
        rows = await driver.fetch(_INGEST_UNNEST, now, *columns)
    return {(r["org_id"], r["idempotency_key"]) for r in rows}


async def existing_keys(
    session: AsyncSession, pairs: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (org, key) pairs are stored already (to call a retried event a duplicate)."""
    wanted = list(set(pairs))
    if not wanted:
        return set()
    driver = await driver_connection(session)
    rows = await driver.fetch(
        "SELECT e.org_id, e.idempotency_key FROM usage_event e"
        " JOIN unnest($1::text[], $2::text[]) AS w(org_id, idempotency_key)"
        " USING (org_id, idempotency_key)",
        [p[0] for p in wanted],
        [p[1] for p in wanted],
    )
    return {(r["org_id"], r["idempotency_key"]) for r in rows}


def _metrics_by_name(rows: Iterable[Any], wanted: set[str]) -> dict[str, MetricView]:
    """Each name a batch used, to the metric it names: its code or an alias.

    The catalog keeps names unique among live metrics only, so a live metric
    wins over an archived one that had the name (which rejects as UNKNOWN_METRIC
    when nothing live has it)."""
    by_name: dict[str, MetricView] = {}
    for r in rows:
        view = MetricView(
            code=r["code"],
            aggregation=Aggregation(r["aggregation"]),
            property_key=r["property_key"],
            active=r["active"],
        )
        names = [r["code"], *(a for a in r["aliases"] if a in wanted and view.active)]
        for name in names:
            held = by_name.get(name)
            if held is None or (view.active and not held.active):
                by_name[name] = view
    return by_name


@dataclass(frozen=True)
class IngestContext:
    """The projections a batch needs, loaded in a handful of queries."""

    metrics: dict[str, MetricView]
    by_id: dict[str, SubscriptionView]
    by_org: dict[str, list[SubscriptionView]]


async def load_context(
    session: AsyncSession,
    *,
    metric_codes: Iterable[str],
    org_ids: Iterable[str],
    subscription_ids: Iterable[str],
    earliest: datetime,
) -> IngestContext:
    """Metrics, subscriptions and their relevant periods for one batch.

    Open periods are read ``FOR KEY SHARE``: held until commit, it makes a
    concurrent period close wait for this batch, and a batch that starts after
    the close sees the period closed. Closed periods are read without a lock
    (they never reopen), only those ending after the batch's earliest event.
    """
    driver = await driver_connection(session)
    wanted = list(set(metric_codes))
    metric_rows = await driver.fetch(
        "SELECT code, aggregation, property_key, active, aliases FROM metric"
        " WHERE code = ANY($1::text[]) OR aliases && $1::text[]",
        wanted,
    )
    metrics = _metrics_by_name(metric_rows, set(wanted))
    sub_rows = await driver.fetch(
        "SELECT subscription_id, org_id, state, pause_time, end_time, external_id"
        " FROM subscription"
        " WHERE org_id = ANY($1::text[]) OR subscription_id = ANY($2::text[])",
        list(set(org_ids)),
        list(set(subscription_ids)),
    )
    ids = [r["subscription_id"] for r in sub_rows]
    periods: dict[str, list[PeriodView]] = {i: [] for i in ids}
    if ids:
        open_rows = await driver.fetch(
            "SELECT subscription_id, period_start, period_end, closed FROM billing_period"
            " WHERE subscription_id = ANY($1::text[]) AND NOT closed"
            " ORDER BY subscription_id, period_start FOR KEY SHARE",
            ids,
        )
        closed_rows = await driver.fetch(
            "SELECT subscription_id, period_start, period_end, closed FROM billing_period"
            " WHERE subscription_id = ANY($1::text[]) AND closed AND period_end > $2",
            ids,
            earliest,
        )
        for r in [*closed_rows, *open_rows]:
            periods[r["subscription_id"]].append(
                PeriodView(r["period_start"], r["period_end"], r["closed"])
            )
    by_id: dict[str, SubscriptionView] = {}
    by_org: dict[str, list[SubscriptionView]] = {}
    for r in sub_rows:
        view = SubscriptionView(
            subscription_id=r["subscription_id"],
            org_id=r["org_id"],
            state=SubscriptionState(r["state"]),
            periods=tuple(sorted(periods[r["subscription_id"]], key=lambda p: p.start)),
            pause_time=r["pause_time"],
            end_time=r["end_time"],
            external_id=r["external_id"],
        )
        by_id[view.subscription_id] = view
        by_org.setdefault(view.org_id, []).append(view)
    return IngestContext(metrics, by_id, by_org)
