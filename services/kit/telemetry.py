"""Logging and OpenTelemetry set-up for one process.

Traces go to an OTLP collector when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; tests
install an in-memory exporter through ``configure_tracing(exporter=...)``.
Metrics are always collected: Prometheus scrapes them from ``/metrics`` on the
process's HTTP port, and they are pushed over OTLP too when an endpoint is set.
Providers are process-wide and configured once, because tests run several
services in one process.
"""

from __future__ import annotations

import json
import logging
import sys
import weakref
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

_configured = False
_metrics_registry: Any = None  # prometheus_client.CollectorRegistry once configured
_instrumented_engines: weakref.WeakSet[Any] = weakref.WeakSet()

# The request a log line belongs to: the gateway's X-Request-Id travels as gRPC
# metadata, and the server interceptor sets it for the whole call.
request_id_var: ContextVar[str] = ContextVar("tally_request_id", default="")

# Attributes every LogRecord has; anything else came from ``extra=`` and is logged.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-5s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that says nothing an operator acts on.
    for noisy in ("nats", "sqlalchemy.engine", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def configure_tracing(
    service: str, otlp_endpoint: str | None = None, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install the process-wide tracer provider once; later calls are no-ops."""
    global _configured
    if _configured:
        return None
    if exporter is None and not otlp_endpoint:
        return None  # API no-op tracer: no cost when nobody collects
    provider = TracerProvider(resource=Resource.create({"service.name": f"tally-{service}"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


def configure_metrics(service: str, otlp_endpoint: str | None = None) -> None:
    """Install the process-wide meter provider once; later calls are no-ops.

    Prometheus reads a registry of its own (not prometheus_client's global one),
    so ``/metrics`` shows exactly what the OpenTelemetry SDK collected.
    """
    global _metrics_registry
    if _metrics_registry is not None:
        return
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
    provider = MeterProvider(
        metric_readers=readers,
        resource=Resource.create({"service.name": f"tally-{service}"}),
    )
    metrics.set_meter_provider(provider)
    _metrics_registry = registry


def prometheus_text() -> tuple[bytes, str]:
    """The current metrics in Prometheus' text format, with its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if _metrics_registry is None:
        return b"", CONTENT_TYPE_LATEST
    return generate_latest(_metrics_registry), CONTENT_TYPE_LATEST


def instrument_engine(engine: AsyncEngine) -> None:
    """Trace SQL statements as children of the use case's span, when tracing is on.

    Each engine gets its own listener (the instrumentor's ``instrument()`` hooks
    only the first engine of a process, and tests run several services in one).
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # no SDK provider: statements would only make no-op spans
    sync_engine = engine.sync_engine
    if sync_engine in _instrumented_engines:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    usage = metrics.get_meter("tally.kit.db").create_up_down_counter(
        "db.client.connections.usage", unit="{connection}"
    )
    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    EngineTracer(tracer, sync_engine, usage)  # type: ignore[no-untyped-call]
    _instrumented_engines.add(sync_engine)
