"""The server interceptors trace and measure every call, including the ones they skip work on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.kit import errors
from services.kit.devstack import free_port
from services.kit.rpc.interceptors import server_interceptors
from services.kit.telemetry import request_id_var
from tests.support.metrics import local_samples, value
from tests.support.tracing import capture_spans, service_of

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACEPARENT = f"00-{CALLER_TRACE:032x}-00f067aa0ba902b7-01"


def _identity(data: bytes) -> bytes:
    return data


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """Answers the trace the call runs in and its request id."""
    if request == b"bad":
        raise errors.InvalidArgument.field("request", "bad", reason="BAD")
    span = trace.get_current_span().get_span_context()
    trace_id = f"{span.trace_id:032x}" if span.is_valid else ""
    return f"{trace_id}/{request_id_var.get()}".encode()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return capture_spans()


@pytest.fixture(scope="module")
async def channel(spans: InMemorySpanExporter) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=server_interceptors("probe"))
    handler = grpc.method_handlers_generic_handler(
        "test.Probe", {"Echo": grpc.unary_unary_rpc_method_handler(_echo, _identity, _identity)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


async def _echo_call(
    channel: grpc.aio.Channel, body: bytes = b"", metadata: tuple[tuple[str, str], ...] = ()
) -> str:
    call = channel.unary_unary("/test.Probe/Echo", _identity, _identity)
    answer: bytes = await call(body, metadata=metadata, timeout=5)
    return answer.decode()


@pytest.fixture
def no_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process as it runs without an OTLP endpoint: only the API's no-op tracer."""
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)


async def test_a_traced_process_records_a_span_per_call(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    answer = await _echo_call(channel, metadata=(("x-request-id", "req-1"),))
    trace_id, request_id = answer.split("/")
    assert request_id == "req-1"
    echoed = [
        s
        for s in spans.get_finished_spans()
        if s.name == "/test.Probe/Echo" and f"{s.context.trace_id:032x}" == trace_id
    ]
    assert len(echoed) == 1
    assert service_of(echoed[0]) == "probe"


@pytest.mark.usefixtures("no_tracer_provider")
async def test_without_a_tracer_the_callers_trace_still_continues(
    channel: grpc.aio.Channel,
) -> None:
    continued = await _echo_call(channel, metadata=(("traceparent", TRACEPARENT),))
    assert continued.split("/")[0] == f"{CALLER_TRACE:032x}"


@pytest.mark.usefixtures("no_tracer_provider")
async def test_without_a_tracer_or_a_caller_trace_no_span_is_made(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    before = len(spans.get_finished_spans())
    answer = await _echo_call(channel, metadata=(("x-request-id", "req-2"),))
    assert answer == "/req-2"
    assert len(spans.get_finished_spans()) == before


async def test_every_call_is_measured_by_method_and_status(channel: grpc.aio.Channel) -> None:
    name = "rpc_server_duration_milliseconds_count"
    labels = {"service": "probe", "rpc_service": "test.Probe", "rpc_method": "Echo"}
    before = local_samples()
    await _echo_call(channel)
    await _echo_call(channel)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _echo_call(channel, b"bad")
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = local_samples()
    for code, calls in (("OK", 2), ("INVALID_ARGUMENT", 1)):
        grew = value(after, name, rpc_grpc_status_code=code, **labels) - value(
            before, name, rpc_grpc_status_code=code, **labels
        )
        assert grew == calls, code
