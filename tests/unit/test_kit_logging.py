"""JSON log lines carry the service, the request and the trace they belong to."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.kit.telemetry import configure_logging, request_id_var


@pytest.fixture
def captured() -> io.StringIO:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("usage", "INFO", "json")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_a_json_line_names_service_request_trace_and_extras(captured: io.StringIO) -> None:
    span = NonRecordingSpan(
        SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    )
    token = request_id_var.set("req-42")
    try:
        with trace.use_span(span):
            logging.getLogger("tally.test").warning(
                "dropped %d", 3, extra={"reason": "UNKNOWN_METRIC"}
            )
    finally:
        request_id_var.reset(token)
    logging.getLogger("tally.test").info("outside any request")

    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["service"] == "usage"
    assert first["message"] == "dropped 3"
    assert first["level"] == "warning"
    assert first["request_id"] == "req-42"
    assert first["trace_id"] == f"{0xABC:032x}" and first["span_id"] == f"{0xDEF:016x}"
    assert first["reason"] == "UNKNOWN_METRIC"
    assert "request_id" not in second and "trace_id" not in second
