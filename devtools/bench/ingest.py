"""Ingestion through each public path, timed from the first send to the last answer.

Requests are built and encoded before the clock starts (protobuf bytes for
gRPC, JSON for HTTP), so the figure is the suite's cost plus the client's
transport work, which shares this machine's cores. Encoding 1,000 events in
the clock cost the client about 6 µs of CPU per event, taken from the suite.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import httpx
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from devtools.bench.events import EventPlan

BATCH = 1000
RPC_TIMEOUT = 120.0
USAGE_SERVICE = "/tally.usage.v1.UsageService/"
BATCH_ROUTE = "/internal/billing/v1/usage/events:batchRecord"
T = TypeVar("T")
Progress = Callable[[int], None] | None


@dataclass
class IngestResult:
    path: str
    events: int
    accepted: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # per call, or per streamed batch

    @property
    def events_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


async def run_pool(
    items: Sequence[T], concurrency: int, work: Callable[[T], Awaitable[None]]
) -> float:
    """``work`` over ``items`` with ``concurrency`` in flight; the wall seconds it took."""
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def record_usage_batch(
    channel: grpc.aio.Channel, plan: EventPlan, *, concurrency: int = 4, progress: Progress = None
) -> IngestResult:
    # Sends the encoded request as is: no serializer on the client's side.
    record = channel.unary_unary(
        USAGE_SERVICE + "RecordUsageBatch",
        request_serializer=None,
        response_deserializer=usage_pb2.RecordUsageBatchResponse.FromString,
    )
    # As a producer that acts on problems only asks: the counts, no result per accepted event.
    requests = [
        (
            len(b),
            usage_pb2.RecordUsageBatchRequest(
                events=b, omit_accepted_results=True
            ).SerializeToString(),
        )
        for b in plan.batches(BATCH)
    ]
    result = IngestResult("RecordUsageBatch", plan.count, 0, 0.0)

    async def send(request: tuple[int, bytes]) -> None:
        events, body = request
        started = time.perf_counter()
        reply = await record(body, timeout=RPC_TIMEOUT)
        result.latencies.append(time.perf_counter() - started)
        result.accepted += reply.accepted_count
        if progress:
            progress(events)

    result.seconds = await run_pool(requests, concurrency, send)
    return result


async def record_usage_single(
    channel: grpc.aio.Channel, plan: EventPlan, *, concurrency: int = 16, progress: Progress = None
) -> IngestResult:
    api = usage_pb2_grpc.UsageServiceStub(channel)
    requests = [usage_pb2.RecordUsageRequest(event=e) for e in plan.messages()]
    result = IngestResult("RecordUsage", plan.count, 0, 0.0)

    async def send(request: usage_pb2.RecordUsageRequest) -> None:
        started = time.perf_counter()
        reply = await api.RecordUsage(request, timeout=RPC_TIMEOUT)
        result.latencies.append(time.perf_counter() - started)
        if reply.result.status == 1:  # USAGE_EVENT_STATUS_ACCEPTED
            result.accepted += 1
        if progress:
            progress(1)

    result.seconds = await run_pool(requests, concurrency, send)
    return result


async def stream_usage(
    channel: grpc.aio.Channel,
    plan: EventPlan,
    *,
    streams: int = 4,
    window: int = 4,
    progress: Progress = None,
) -> IngestResult:
    """``streams`` concurrent StreamUsage calls, each with up to ``window`` batches unacked."""
    stream = channel.stream_stream(
        USAGE_SERVICE + "StreamUsage",
        request_serializer=None,
        response_deserializer=usage_pb2.StreamUsageResponse.FromString,
    )
    batches = list(plan.batches(BATCH))
    shares = [
        [
            usage_pb2.StreamUsageRequest(sequence=sequence, events=events).SerializeToString()
            for sequence, events in enumerate(batches[i::streams], start=1)
        ]
        for i in range(streams)
    ]
    result = IngestResult("StreamUsage", plan.count, 0, 0.0)

    async def one_stream(share: list[bytes]) -> None:
        credit = asyncio.Semaphore(window)
        sent_at: dict[int, float] = {}

        async def requests() -> AsyncIterator[bytes]:
            for sequence, body in enumerate(share, start=1):
                await credit.acquire()
                sent_at[sequence] = time.perf_counter()
                yield body

        call = stream(requests(), timeout=RPC_TIMEOUT)
        async for reply in call:
            for batch in reply.batches:
                result.latencies.append(time.perf_counter() - sent_at.pop(batch.sequence))
                result.accepted += batch.accepted_count
                if progress:
                    progress(batch.accepted_count + batch.duplicate_count + batch.rejected_count)
                credit.release()

    started = time.perf_counter()
    await asyncio.gather(*(one_stream(s) for s in shares if s))
    result.seconds = time.perf_counter() - started
    return result


async def http_batch(
    gateway_url: str,
    token: str,
    plan: EventPlan,
    *,
    concurrency: int = 4,
    progress: Progress = None,
) -> IngestResult:
    """The gateway's JSON batch route, ``BATCH`` events per POST."""
    # Encoded before the clock starts, like the gRPC paths' messages.
    bodies = [
        (len(b["events"]), json.dumps({**b, "omitAcceptedResults": True}).encode())
        for b in plan.json_batches(BATCH)
    ]
    result = IngestResult("HTTP batch (gateway)", plan.count, 0, 0.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=gateway_url,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=RPC_TIMEOUT,
        limits=limits,
    ) as client:

        async def send(body: tuple[int, bytes]) -> None:
            started = time.perf_counter()
            response = await client.post(BATCH_ROUTE, content=body[1])
            result.latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            result.accepted += int(response.json().get("acceptedCount", 0))
            if progress:
                progress(body[0])

        result.seconds = await run_pool(bodies, concurrency, send)
    return result
