"""Request latency of the read paths product code sits behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from devtools.bench.ingest import run_pool
from devtools.bench.world import FEATURE, Subscribed

DEADLINE = 10.0
WARM_CONCURRENCY = 16
WARM_SECONDS = 2.0


async def check_entitlement_at_rate(
    channel: grpc.aio.Channel,
    orgs: Sequence[str],
    *,
    rate: float = 1000.0,
    seconds: float = 10.0,
    warm_seconds: float = WARM_SECONDS,
) -> tuple[list[float], int, float]:
    """Open loop: one call every 1/``rate`` s whatever the answers do.

    A closed loop would slow down with the server and hide its queueing;
    here a slow answer makes the next ones wait and shows in the tail.
    Returns (latencies, errors, the rate really sent).
    """
    api = subscriptions_pb2_grpc.SubscriptionsServiceStub(channel)
    requests = [
        subscriptions_pb2.CheckEntitlementRequest(org_id=org, feature_key=FEATURE) for org in orgs
    ]

    async def warm(request: subscriptions_pb2.CheckEntitlementRequest) -> None:
        await api.CheckEntitlement(request, timeout=DEADLINE)

    # Warm the channel and the server's cache outside the measurement, into
    # the steady state of a service answering product code all day: every
    # org read once, then the same open loop for a moment, drained.
    await run_pool(requests, WARM_CONCURRENCY, warm)
    await _open_loop(api, requests, rate, warm_seconds)
    return await _open_loop(api, requests, rate, seconds)


async def _open_loop(
    api: subscriptions_pb2_grpc.SubscriptionsServiceStub,
    requests: Sequence[subscriptions_pb2.CheckEntitlementRequest],
    rate: float,
    seconds: float,
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: subscriptions_pb2.CheckEntitlementRequest, due: float) -> None:
        nonlocal errors
        try:
            await api.CheckEntitlement(request, timeout=DEADLINE)
        except grpc.aio.AioRpcError:
            errors += 1
            return
        # From when it was due, not when the loop got round to sending it.
        latencies.append(time.perf_counter() - due)

    total = int(rate * seconds)
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(requests[i % len(requests)], due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent_for = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return latencies, errors, total / sent_for if sent_for > 0 else 0.0


async def preview_invoices(
    channel: grpc.aio.Channel,
    subscriptions: Sequence[Subscribed],
    *,
    calls: int = 500,
    concurrency: int = 4,
) -> list[float]:
    """Closed loop PreviewInvoice over the subscriptions (it rates live usage)."""
    api = invoicing_pb2_grpc.InvoicingServiceStub(channel)
    requests = [
        invoicing_pb2.PreviewInvoiceRequest(org_id=s.org_id, subscription_id=s.subscription_id)
        for s in subscriptions
    ]
    await api.PreviewInvoice(requests[0], timeout=DEADLINE)
    latencies: list[float] = []

    async def one(request: invoicing_pb2.PreviewInvoiceRequest) -> None:
        started = time.perf_counter()
        await api.PreviewInvoice(request, timeout=DEADLINE)
        latencies.append(time.perf_counter() - started)

    await run_pool([requests[i % len(requests)] for i in range(calls)], concurrency, one)
    return latencies
