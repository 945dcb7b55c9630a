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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

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


# Lago's and Stripe's batch sizes in the bench line; Stripe's stream takes at most 100.
DIALECT_BATCH = 100
DIALECTS = ("lago", "openmeter", "stripe")
LAGO_ROUTE = "/api/v1/events/batch"
OPENMETER_ROUTE = "/api/v1/events"
STRIPE_SESSION_ROUTE = "/v2/billing/meter_event_session"
STRIPE_STREAM_ROUTE = "/v2/billing/meter_event_stream"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"
# A dialect route's figure: (org's bearer secret or session token, events, body) per call.
DialectCall = tuple[str, int, bytes]


async def warm_api_keys(client: httpx.AsyncClient, secrets: Sequence[str]) -> None:
    """Each key verified once (the gateway caches it), as a producer's key is after its
    first call: an empty Lago batch is answered 422 after the key is checked, storing nothing."""

    async def one(secret: str) -> None:
        response = await client.post(LAGO_ROUTE, content=b'{"events": []}', headers=_bearer(secret))
        if response.status_code != 422:
            raise RuntimeError(f"warming an API key: {response.status_code} {response.text}")

    await run_pool(secrets, 4, one)


async def open_stripe_sessions(client: httpx.AsyncClient, secrets: Sequence[str]) -> dict[str, str]:
    """A v2 meter event session per key: its authentication token (verifies the key too)."""
    tokens: dict[str, str] = {}

    async def one(secret: str) -> None:
        response = await client.post(STRIPE_SESSION_ROUTE, headers=_bearer(secret))
        response.raise_for_status()
        tokens[secret] = response.json()["authentication_token"]

    await run_pool(secrets, 4, one)
    return tokens


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def dialect_batch(
    gateway_url: str,
    dialect: str,
    plan: EventPlan,
    secret_of: Mapping[str, str],
    *,
    concurrency: int = 4,
    progress: Progress = None,
) -> IngestResult:
    """One of the gateway's ingestion dialects, ``DIALECT_BATCH`` events of one org per call.

    ``dialect`` is ``lago``, ``openmeter`` or ``stripe``; ``secret_of`` maps each
    org of the plan to its ingestion API key. Keys are verified (and Stripe's
    sessions opened) before the clock starts.
    """
    async with httpx.AsyncClient(
        base_url=gateway_url,
        timeout=RPC_TIMEOUT,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    ) as client:
        if dialect == "lago":
            path, media, name = LAGO_ROUTE, "application/json", "Lago batch (gateway)"
            batches: Iterable[tuple[str, Any]] = plan.lago_batches(DIALECT_BATCH)
        elif dialect == "openmeter":
            path, media, name = OPENMETER_ROUTE, CLOUDEVENTS_BATCH, "OpenMeter batch (gateway)"
            batches = plan.cloudevents_batches(DIALECT_BATCH)
        elif dialect == "stripe":
            path, media, name = (
                STRIPE_STREAM_ROUTE,
                "application/json",
                "Stripe v2 stream (gateway)",
            )
            batches = plan.stripe_batches(DIALECT_BATCH)
        else:
            raise ValueError(f"unknown dialect {dialect!r}")
        # Encoded before the clock starts, like every other path's requests.
        calls: list[DialectCall] = [
            (
                secret_of[org],
                len(body["events"] if isinstance(body, dict) else body),
                json.dumps(body).encode(),
            )
            for org, body in batches
        ]
        secrets = sorted({secret for secret, _, _ in calls})
        if dialect == "stripe":
            token_of = await open_stripe_sessions(client, secrets)
            calls = [(token_of[secret], n, body) for secret, n, body in calls]
        else:
            await warm_api_keys(client, secrets)
        result = IngestResult(name, plan.count, 0, 0.0)

        async def send(call: DialectCall) -> None:
            bearer, events, body = call
            started = time.perf_counter()
            response = await client.post(
                path, content=body, headers={**_bearer(bearer), "Content-Type": media}
            )
            result.latencies.append(time.perf_counter() - started)
            if response.is_error:
                # The dialect's own error body says which event and why.
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:500]}")
            result.accepted += _accepted(dialect, response, events)
            if progress:
                progress(events)

        result.seconds = await run_pool(calls, concurrency, send)
    return result


def _accepted(dialect: str, response: httpx.Response, events: int) -> int:
    """The events of a 2xx answer that counted now (not already stored)."""
    if dialect == "lago":
        return sum(1 for e in response.json()["events"] if e["tally_status"] == "accepted")
    # OpenMeter's 204 and Stripe's {} carry no counts: every event counted or
    # was already stored (a rejected one is a 400, raised above). The bench's
    # keys are fresh, so each is a new event; the smoke test checks the
    # aggregates to be sure.
    return events
