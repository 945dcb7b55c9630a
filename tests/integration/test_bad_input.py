"""Bad input on every public RPC, generated from the descriptors.

For each method of the five services: the empty request, each top-level field
alone with a malformed, out-of-range or wrong-kind value, every field junk at
once, and (once per service) a request over the gRPC size limit. Every answer
must be a clear client error (or a harmless OK), never INTERNAL, UNKNOWN or a
hang, and nothing may be written: the row count of every table in every
service's schema, outboxes included, is the same after the pass as before.

Tenant isolation and malformed JSON through the gateway are covered route by
route in tests/integration/gateway/test_gateway_flows.py and, against the
processes of a real suite, in tests/e2e/test_money_path_e2e.py.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from tally.subscriptions.v1 import subscriptions_pb2

from devtools.stripe_emulator import DEFAULT_API_KEY, DEFAULT_WEBHOOK_SECRET, StripeEmulator
from services.kit import migrations
from services.kit.runtime import ServiceRuntime
from services.kit.settings import SERVICE_NAMES
from tests.support.catalog import publish_per_call_package
from tests.support.services import service_in_process

pytestmark = pytest.mark.integration

CLEAR = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
OVERSIZED = 5 * 1024 * 1024  # over the 4 MiB the kit server accepts
F = FieldDescriptor
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


def _service_descriptor(service: str) -> ServiceDescriptor:
    module = importlib.import_module(f"tally.{service}.v1.{service}_pb2")
    [descriptor] = module.DESCRIPTOR.services_by_name.values()
    return descriptor  # type: ignore[no-any-return]


def _cls(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


def _bad_strings(field: FieldDescriptor) -> list[str]:
    name = field.name
    if name.endswith("_id") or name in ("id", "page_token", "request_id"):
        return ["../../no-such-id", "bad\x00id"]
    if "currency" in name:
        return ["zz", "ZZZZ"]
    if "amount" in name or "rate" in name or "value" in name or "limit" in name:
        return ["1e999", "-NaN"]
    if "time" in name or "date" in name:
        return ["2026-13-45T99:00:00Z"]
    return ["\x00", "x" * 5000]


def _bad_scalars(field: FieldDescriptor) -> list[Any]:
    if field.type == F.TYPE_STRING:
        return _bad_strings(field)
    if field.type == F.TYPE_BYTES:
        return [b"\xff\xfe"]
    if field.type == F.TYPE_ENUM:
        return [999]
    if field.type == F.TYPE_BOOL:
        return [True]
    if field.type in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return [-1, 2**31 - 1]
    if field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return [-1, 2**63 - 1]
    if field.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return [2**32 - 1]
    if field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return [2**64 - 1]
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return [float("nan"), float("inf"), -1.0]
    return []


def _junk_message(descriptor: Any, depth: int = 0) -> Message:
    """Every field set to its first bad value, nested messages too (two levels)."""
    msg = _cls(descriptor)()
    if descriptor.full_name == "google.protobuf.Timestamp":
        msg.seconds = MAX_TIMESTAMP_SECONDS + 1  # type: ignore[attr-defined]
        msg.nanos = -1  # type: ignore[attr-defined]
        return msg
    for field in descriptor.fields:
        for value in _values(field, depth)[:1]:
            _assign(msg, field, value)
    return msg


def _values(field: FieldDescriptor, depth: int) -> list[Any]:
    if field.type == F.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            return [{"\x00": _junk_value(field.message_type.fields_by_name["value"], depth)}]
        if depth >= 2:
            return []
        return [_junk_message(field.message_type, depth + 1)]
    return _bad_scalars(field)


def _junk_value(field: FieldDescriptor, depth: int) -> Any:
    values = _values(field, depth + 1)
    return values[0] if values else None


def _assign(msg: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(msg, field.name)
    if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        for k, v in value.items():
            if v is None:
                continue
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        if isinstance(value, Message):
            target.add().CopyFrom(value)
        else:
            target.append(value)
    elif isinstance(value, Message):
        target.CopyFrom(value)
    else:
        setattr(msg, field.name, value)


def requests_for(method: MethodDescriptor) -> Iterator[tuple[str, Message]]:
    descriptor = method.input_type
    yield "empty", _cls(descriptor)()
    for field in descriptor.fields:
        for i, value in enumerate(_values(field, 0)):
            msg = _cls(descriptor)()
            _assign(msg, field, value)
            yield f"{field.name}#{i}", msg
    yield "all junk", _junk_message(descriptor)


def oversized_request(service: ServiceDescriptor) -> tuple[MethodDescriptor, Message]:
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            continue
        for field in method.input_type.fields:
            if field.type == F.TYPE_STRING and not field.is_repeated:
                msg = _cls(method.input_type)()
                setattr(msg, field.name, "x" * OVERSIZED)
                return method, msg
    raise AssertionError(f"{service.full_name} has no unary method with a string field")


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str


async def call(channel: grpc.aio.Channel, method: MethodDescriptor, request: Message) -> Answer:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_cls = _cls(method.output_type)
    try:
        if method.client_streaming:
            stream = channel.stream_stream(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_cls.FromString,
            )
            responses = stream(iter([request]), timeout=10)
            async for _ in responses:
                pass
        else:
            unary = channel.unary_unary(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_cls.FromString,
            )
            await unary(request, timeout=10)
    except grpc.aio.AioRpcError as err:
        return Answer(err.code(), err.details() or "")
    return Answer(grpc.StatusCode.OK, "")


@pytest.fixture(scope="module")
async def services(database_url: str, nats_url: str) -> AsyncIterator[dict[str, ServiceRuntime]]:
    for service in SERVICE_NAMES:
        await migrations.upgrade_async(service, database_url)
    mp = pytest.MonkeyPatch()
    async with AsyncExitStack() as stack:
        stack.callback(mp.undo)
        emulator = await stack.enter_async_context(StripeEmulator())
        mp.setenv("PAYMENTS_STRIPE_API_KEY", DEFAULT_API_KEY)
        mp.setenv("PAYMENTS_STRIPE_API_BASE", emulator.base_url)
        mp.setenv("PAYMENTS_STRIPE_WEBHOOK_SECRET", DEFAULT_WEBHOOK_SECRET)
        runtimes: dict[str, ServiceRuntime] = {}
        for s in SERVICE_NAMES:
            if s == "invoicing":
                # A quote asks subscriptions to check the change, as in production.
                mp.setenv(
                    "INVOICING_SUBSCRIPTIONS_ADDR", f"127.0.0.1:{runtimes['subscriptions'].port}"
                )
                mp.setenv("INVOICING_USAGE_ADDR", f"127.0.0.1:{runtimes['usage'].port}")
            runtimes[s] = await stack.enter_async_context(
                service_in_process(s, database_url, nats_url, outbox_poll_seconds=0.05)
            )
        yield runtimes


async def row_counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'",
            list(SERVICE_NAMES),
        )
        return {
            f"{t['table_schema']}.{t['table_name']}": int(
                await conn.fetchval(
                    f'SELECT count(*) FROM "{t["table_schema"]}"."{t["table_name"]}"'
                )
            )
            for t in tables
        }
    finally:
        await conn.close()


async def audited_successes(database_url: str) -> int:
    """Audit rows of mutations that took effect, in every service's schema."""
    conn = await asyncpg.connect(database_url)
    try:
        counts = [
            await conn.fetchval(f"SELECT count(*) FROM {s}.audit_entry WHERE status_code = 'OK'")
            for s in SERVICE_NAMES
        ]
    finally:
        await conn.close()
    return sum(counts)


async def settled_counts(database_url: str) -> dict[str, int]:
    """Counts once the seed's events have all been applied (two equal reads)."""
    previous = await row_counts(database_url)
    for _ in range(50):
        await asyncio.sleep(0.4)
        current = await row_counts(database_url)
        if current == previous:
            return current
        previous = current
    raise AssertionError("the database never settled")


async def seed(channels: dict[str, grpc.aio.Channel]) -> None:
    """A little real data, so bad ids meet real rows and real tenants."""
    from tally.catalog.v1 import catalog_pb2_grpc
    from tally.subscriptions.v1 import subscriptions_pb2_grpc

    from tests.support.e2e import until

    cat = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
    _, package = await publish_per_call_package(cat)
    subs = subscriptions_pb2_grpc.SubscriptionsServiceStub(channels["subscriptions"])
    await until(
        lambda: subs.CreateSubscription(
            subscriptions_pb2.CreateSubscriptionRequest(
                org_id="org_a", package_id=package.package_id, request_id="seed-sub"
            ),
            timeout=10,
        ),
        lambda r: bool(r.subscription.subscription_id),
    )


@dataclass(frozen=True)
class Probe:
    service: str
    method: MethodDescriptor
    label: str
    request: Message

    def __str__(self) -> str:
        return f"{self.method.full_name} [{self.label}]"


def probes() -> list[Probe]:
    found = []
    for service in SERVICE_NAMES:
        descriptor = _service_descriptor(service)
        for method in descriptor.methods:
            found += [Probe(service, method, label, r) for label, r in requests_for(method)]
        method, big = oversized_request(descriptor)
        found.append(Probe(service, method, "oversized", big))
    return found


async def answers(
    channels: dict[str, grpc.aio.Channel], todo: list[Probe]
) -> list[tuple[Probe, Answer]]:
    limit = asyncio.Semaphore(16)

    async def one(probe: Probe) -> tuple[Probe, Answer]:
        async with limit:
            return probe, await call(channels[probe.service], probe.method, probe.request)

    return list(await asyncio.gather(*(one(p) for p in todo)))


def unclear(probe: Probe, answer: Answer) -> str | None:
    if probe.label == "oversized":
        ok = answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        return None if ok else f"{probe}: {answer.code.name}, expected RESOURCE_EXHAUSTED"
    if answer.code not in CLEAR:
        return f"{probe}: {answer.code.name} {answer.details!r}"
    if answer.code != grpc.StatusCode.OK and not answer.details:
        return f"{probe}: {answer.code.name} without a message"
    return None


async def test_every_rpc_answers_bad_input_clearly_and_writes_nothing(
    services: dict[str, ServiceRuntime], database_url: str
) -> None:
    channels = {s: grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}") for s, rt in services.items()}
    try:
        await seed(channels)
        first = await answers(channels, probes())
        problems = [line for p, a in first if (line := unclear(p, a))]
        # Some junk is legal (a billing profile for an org id never seen before):
        # what was answered OK may write. What was refused must write nothing,
        # so the refused requests go again between two counts of every table.
        refused = [p for p, a in first if a.code != grpc.StatusCode.OK]
        before = await settled_counts(database_url)
        before_successes = await audited_successes(database_url)
        again = await answers(channels, refused)
        after = await settled_counts(database_url)
    finally:
        for channel in channels.values():
            await channel.close()
    assert len(first) > 400
    assert len(refused) > 300
    assert problems == [], "\n".join(problems)
    assert [str(p) for p, a in again if a.code == grpc.StatusCode.OK] == []
    # The audit trail records each refusal with its reason (docs/gateway.md,
    # "Audit trail"); nothing else may change, and no refusal reads as a success.
    written = {t: (before[t], after[t]) for t in before if before[t] != after[t]}
    assert {t: n for t, n in written.items() if not t.endswith(".audit_entry")} == {}
    assert await audited_successes(database_url) == before_successes


async def test_an_out_of_range_event_time_is_answered_per_event_not_for_the_call(
    services: dict[str, ServiceRuntime],
) -> None:
    """The junk Timestamp above, as a usage event's time, rejects that event only
    (USAGE_REJECTION_REASON_INVALID_EVENT_TIME); it used to fail the whole call."""
    from tally.usage.v1 import resources_pb2 as usage_resources
    from tally.usage.v1 import usage_pb2, usage_pb2_grpc

    def junk_time(key: str) -> usage_resources.UsageEvent:
        event = usage_resources.UsageEvent(org_id="org_a", metric_code="api_calls")
        event.idempotency_key = key
        event.event_time.seconds = MAX_TIMESTAMP_SECONDS + 1
        return event

    async with grpc.aio.insecure_channel(f"127.0.0.1:{services['usage'].port}") as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        single = await stub.RecordUsage(
            usage_pb2.RecordUsageRequest(event=junk_time("bad-time-1")), timeout=10
        )
        batch = await stub.RecordUsageBatch(
            usage_pb2.RecordUsageBatchRequest(events=[junk_time("bad-time-2")]), timeout=10
        )
    for result in (single.result, batch.results[0]):
        assert result.status == usage_resources.USAGE_EVENT_STATUS_REJECTED
        assert result.reason == usage_resources.USAGE_REJECTION_REASON_INVALID_EVENT_TIME
    assert batch.rejected_count == 1
