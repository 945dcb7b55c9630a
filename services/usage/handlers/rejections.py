"""The rejection feed: listing an org's rejected events, announcing new ones.

Rows are written by ingestion itself (handlers.ingest), in the batch's
transaction. ``usage.event_rejected`` is not emitted there: a periodic job
gathers the unannounced rows and emits one event per org per round, so a
producer flooding bad events costs ingestion one statement per batch and NATS
a handful of messages, however many events it sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession
from tally.events.v1 import usage_events_pb2

from services.kit.errors import InvalidArgument, Violations
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.uow import UnitOfWork
from services.usage.protomap import rejected_message
from services.usage.repository import rejections
from services.usage.repository.rejections import RejectionFilter

DEFAULT_PAGE_SIZE = 100
ANNOUNCE_BATCH = 500
# Rounds per tick of the emitter job while rounds come back full.
ANNOUNCE_ROUNDS = 10


async def list_rejected_events(
    session: AsyncSession, f: RejectionFilter, *, requested_page_size: int, page_token: str
) -> tuple[list[Row[Any]], str]:
    """Newest first, keyset-paginated on the row id."""
    v = Violations()
    v.require(f.org_id, "org_id")
    v.raise_if_any()
    size = page_size(requested_page_size, default=DEFAULT_PAGE_SIZE)
    filters = {
        "org_id": f.org_id,
        "reason": f.reason,
        "metric_code": f.metric_code,
        "start": f.start_time.isoformat() if f.start_time else "",
        "end": f.end_time.isoformat() if f.end_time else "",
    }
    token = PageToken.decode(page_token, filters)
    before: int | None = None
    if token is not None:
        try:
            [before] = [int(x) for x in token.after]
        except (ValueError, TypeError):
            raise InvalidArgument.field("page_token", "is not a token this API issued") from None
    rows = list(await rejections.rejections(session, f, before, size + 1))
    token_out = next_page_token(rows, size, lambda r: [r.rejected_event_id], filters)
    return rows[:size], token_out


async def announce_rejections(uow: UnitOfWork, *, limit: int = ANNOUNCE_BATCH) -> int:
    """One ``usage.event_rejected`` per org for the oldest unannounced rows; the
    caller commits. Returns how many rows were announced."""
    rows = await rejections.unannounced(uow.session, limit)
    by_org: dict[str, list[Row[Any]]] = {}
    for row in rows:
        by_org.setdefault(row.org_id, []).append(row)
    for org_id, org_rows in by_org.items():
        uow.emit(
            usage_events_pb2.UsageEventRejectedEvent(
                org_id=org_id,
                rejected_events=[rejected_message(r, with_payload=False) for r in org_rows],
            ),
            aggregate_id=org_id,
        )
    await rejections.mark_announced(uow.session, _ids(rows))
    return len(rows)


def _ids(rows: Sequence[Row[Any]]) -> list[int]:
    return [r.rejected_event_id for r in rows]
