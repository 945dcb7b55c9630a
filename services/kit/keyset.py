"""Newest-first keyset pages in SQL: the query side of kit.pagination's tokens.

Listing APIs sort by (create_time, id) descending; the page token carries the
last row's pair, so the next page is strictly older (ties broken by id) and
never skips or repeats a row when others are inserted meanwhile.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Select, and_, or_


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
