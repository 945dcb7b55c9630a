"""The billing run: close every period, then wait until each invoice is finalized."""

from __future__ import annotations

import time
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from devtools.bench.world import wait_for_rows

CLOSE_CHUNK = 1000
FINALIZED = (
    "SELECT count(*) FROM invoicing.invoice WHERE reason = 'period_close' AND state = 'finalized'"
)


async def billing_run(
    channel: grpc.aio.Channel,
    database_url: str,
    *,
    close_at: datetime,
    subscriptions: int,
    timeout: float = 900,
) -> tuple[float, float, int]:
    """(seconds to close the periods, seconds until all invoices finalized, periods closed).

    ``ClosePeriods`` runs the billing clock at ``close_at`` in chunks; invoicing
    builds and finalizes each invoice from the ``period_closed`` events, so the
    run ends when the last of them is finalized.
    """
    api = subscriptions_pb2_grpc.SubscriptionsServiceStub(channel)
    now = Timestamp()
    now.FromDatetime(close_at)
    started = time.perf_counter()
    closed = 0
    while True:
        reply = await api.ClosePeriods(
            subscriptions_pb2.ClosePeriodsRequest(now=now, max_periods=CLOSE_CHUNK),
            timeout=timeout,
        )
        closed += len(reply.closed_periods)
        if not reply.more_due:
            break
    closing = time.perf_counter() - started
    await wait_for_rows(
        database_url, FINALIZED, subscriptions, what="finalized invoices", seconds=timeout
    )
    return closing, time.perf_counter() - started, closed
