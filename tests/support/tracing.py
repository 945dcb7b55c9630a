"""Capturing the spans every in-process service records."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.kit.telemetry import configure_tracing


def capture_spans() -> InMemorySpanExporter:
    """An exporter receiving every span ended from now on in this process.

    The tracer provider is process-wide and set once; when an earlier test set
    it, the new exporter joins it.
    """
    exporter = InMemorySpanExporter()
    if configure_tracing("tests", exporter=exporter) is None:
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), "tracing was set up without the SDK"
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def service_of(span: ReadableSpan) -> str:
    """The Tally service that recorded a span (gateway, usage, ...), or ""."""
    return str((span.attributes or {}).get("tally.service", ""))
