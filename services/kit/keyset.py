"""List queries in SQL: filters and newest-first keyset pages (the query side
of kit.pagination's tokens).

Listing APIs sort by (create_time, id) descending; the page token carries the
last row's pair, so the next page is strictly older (ties broken by id) and
never skips or repeats a row when others are inserted meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Select, Table, and_, or_


def newest_first(
    stmt: Select[Any],
    time_col: Column[Any],
    id_col: Column[Any],
    after: list[Any] | None,
    limit: int,
) -> Select[Any]:
    """``stmt`` ordered newest first, after the key ``[iso time, id]`` if given."""
    if after:
        at = datetime.fromisoformat(str(after[0]))
        stmt = stmt.where(or_(time_col < at, and_(time_col == at, id_col < after[1])))
    return stmt.order_by(time_col.desc(), id_col.desc()).limit(limit)


def where_equal(stmt: Select[Any], table: Table, filters: Mapping[str, Any]) -> Select[Any]:
    """Narrow ``stmt`` to rows whose column equals each set filter.

    A list request's filters are named after the columns they match; an
    empty value means "any", as AIP-160 equality filters do.
    """
    for name, value in filters.items():
        if value:
            stmt = stmt.where(table.c[name] == value)
    return stmt
