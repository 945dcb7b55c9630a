"""Run one service: dependencies first, then gRPC, then background work.

The order matters for health: the process answers NOT_SERVING until PostgreSQL
and NATS are connected, flips to NOT_SERVING whenever either goes away, and
enters graceful shutdown (health first, then drain in-flight calls, then stop
background work) on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import MetaData, text
from starlette.routing import BaseRoute

from services.kit import audit
from services.kit.bus import EventBus
from services.kit.consumer import EventConsumer, Inbox, Subscription
from services.kit.db import Database, redact
from services.kit.devstack.errors import DevStackError
from services.kit.devstack.ports import ensure_port_free
from services.kit.errors import StartupError
from services.kit.gauges import ServiceGauges
from services.kit.gauges import register as register_gauges
from services.kit.gauges import unregister as unregister_gauges
from services.kit.gctune import tune_for_serving
from services.kit.http import HttpEndpoint, service_app
from services.kit.idempotency import RequestLog
from services.kit.outbox import Outbox, OutboxRelay
from services.kit.rpc.interceptors import server_interceptors
from services.kit.settings import ServiceSettings
from services.kit.streams import dlq_stream, producer_stream
from services.kit.tasks import cancel_and_wait, raise_if_cancelling
from services.kit.telemetry import configure_metrics, configure_tracing, instrument_engine
from services.kit.uow import UnitOfWork

log = logging.getLogger(__name__)

HEALTH_PROBE_SECONDS = 2.0


@dataclass
class ServiceContext:
    """What a service's wiring gets to build its servicer, handlers and jobs."""

    settings: ServiceSettings
    database: Database
    bus: EventBus
    outbox: Outbox
    inbox: Inbox
    relay: OutboxRelay
    requests: RequestLog

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.database, self.outbox, on_events_committed=self.relay.wake)


Registrar = Callable[[grpc.aio.Server, ServiceContext], Sequence[str]]
Job = Callable[[], Awaitable[None]]


def _no_subscriptions(ctx: ServiceContext) -> Sequence[Subscription[Any]]:
    return ()


def _no_jobs(ctx: ServiceContext) -> Sequence[Job]:
    return ()


def _no_routes(ctx: ServiceContext) -> Sequence[BaseRoute]:
    return ()


def _default_uow(ctx: ServiceContext) -> Callable[[], UnitOfWork]:
    return ctx.unit_of_work


@dataclass(frozen=True)
class ServiceSpec:
    """Everything that differs between services; the runtime does the rest.

    ``register`` adds the servicers to the server and returns their full names
    (for health and reflection). ``subscriptions`` and ``jobs`` are background
    work, run only where ``WORKER_BILLING_ENABLED`` is true. ``http_routes``
    are served on the service's HTTP port beside ``/healthz`` on every replica.
    ``serving_tasks`` run on every replica too, worker or not, from when gRPC
    serves until the service stops (e.g. keeping an in-memory view current).
    """

    name: str
    metadata: MetaData
    register: Registrar
    subscriptions: Callable[[ServiceContext], Sequence[Subscription[Any]]] = _no_subscriptions
    jobs: Callable[[ServiceContext], Sequence[Job]] = _no_jobs
    serving_tasks: Callable[[ServiceContext], Sequence[Job]] = _no_jobs
    uow_factory: Callable[[ServiceContext], Callable[[], UnitOfWork]] = _default_uow
    http_routes: Callable[[ServiceContext], Sequence[BaseRoute]] = _no_routes
    # Other producers whose streams this service reads; provisioned here too so
    # start-up order between services never matters.
    extra_producers: tuple[str, ...] = field(default_factory=tuple)


def _require_free_port(service: str, host: str, port: int) -> None:
    try:
        ensure_port_free(port, host, what=f"{service} ({service.upper()}_GRPC_PORT)")
    except DevStackError as exc:
        raise StartupError(str(exc)) from None


class ServiceRuntime:
    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.context: ServiceContext | None = None
        self.consumers: list[EventConsumer[Any]] = []
        self.port = 0
        self.http: HttpEndpoint | None = None
        self._service_names: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._serving = False
        self._gauges: ServiceGauges | None = None

    async def start(self) -> None:
        s = self.settings
        if s.grpc_port:
            # Before anything connects: a taken port is the most common
            # mistake, and gRPC's own bind failure logs a C-core line.
            _require_free_port(self.spec.name, s.grpc_host, s.grpc_port)
        configure_tracing(self.spec.name, s.otel_exporter_otlp_endpoint)
        configure_metrics(self.spec.name, s.otel_exporter_otlp_endpoint)
        database = Database(
            s.database_url,
            s.db_schema,
            logical_schema=self.spec.name,
            pool_size=s.db_pool_size,
            ping_idle_seconds=s.db_ping_idle_seconds,
        )
        instrument_engine(database.engine)
        try:
            await database.check(s.startup_timeout_seconds)
            await self._check_migrated(database)
            bus = await EventBus.connect(
                s.nats_url,
                name=f"tally-{self.spec.name}",
                timeout=s.startup_timeout_seconds,
                on_connection_change=self._on_bus_change,
            )
        except BaseException:
            await database.dispose()
            raise
        outbox = Outbox(self.spec.metadata.tables[f"{self.spec.name}.outbox_event"])
        inbox = Inbox(self.spec.metadata.tables[f"{self.spec.name}.inbox_message"])
        relay = OutboxRelay(
            database,
            bus,
            outbox,
            batch_size=s.outbox_batch_size,
            poll_seconds=s.outbox_poll_seconds,
        )
        tables = self.spec.metadata.tables
        requests = RequestLog(
            tables[f"{self.spec.name}.idempotent_request"],
            audit=audit.AuditLog(tables[f"{self.spec.name}.audit_entry"], self.spec.name),
        )
        ctx = ServiceContext(s, database, bus, outbox, inbox, relay, requests)
        self.context = ctx
        try:
            subscriptions = self.spec.subscriptions(ctx)
            producers = {self.spec.name, *self.spec.extra_producers}
            producers |= {sub.stream.removeprefix("TALLY_").lower() for sub in subscriptions}
            await bus.ensure_streams(
                [*(producer_stream(p) for p in sorted(producers)), dlq_stream()]
            )
            self.server = self._build_server(ctx)
            await self.server.start()
            if s.http_enabled:
                app = service_app(self.spec.name, lambda: self._serving, self.spec.http_routes(ctx))
                self.http = HttpEndpoint(self.spec.name, app, s.http_host, s.http_port)
                await self.http.start()
            await self._set_serving(True)
            for i, task in enumerate(self.spec.serving_tasks(ctx)):
                self._spawn(task(), f"serving-{i}")
            if s.worker_billing_enabled:
                self._start_background(ctx, subscriptions)
            self._gauges = ServiceGauges(
                self.spec.name,
                database,
                outbox,
                js=bus.js,
                consumers=[(c.sub.stream, c.consumer_name) for c in self.consumers],
            )
            register_gauges(self._gauges)
            self._spawn(self._gauges.sample_forever(), "metrics-sampler")
            # Start-up is done: what exists now lives as long as the process.
            tune_for_serving()
            self._spawn(self._watch_dependencies(ctx), "health-watch")
        except BaseException:
            await self.stop()
            raise
        log.info(
            "%s serving gRPC on %s:%d, HTTP on %s (worker %s)",
            self.spec.name,
            s.grpc_host,
            self.port,
            f"{s.http_host}:{self.http.port}" if self.http else "off",
            "on" if s.worker_billing_enabled else "off",
        )

    def _build_server(self, ctx: ServiceContext) -> grpc.aio.Server:
        server = grpc.aio.server(
            interceptors=server_interceptors(self.spec.name),
            options=[
                ("grpc.so_reuseport", 0),
                # Explicit, so an oversized request is refused (RESOURCE_EXHAUSTED)
                # by a limit ops can see and tune, never by a library default.
                ("grpc.max_receive_message_length", ctx.settings.grpc_max_receive_bytes),
            ],
        )
        self._service_names = list(self.spec.register(server, ctx))
        if ctx.requests.audit is not None:
            # Every service serves its own trail; the gateway merges them.
            self._service_names.append(audit.register(server, ctx.database, ctx.requests.audit))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [
                *self._service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        address = f"{ctx.settings.grpc_host}:{ctx.settings.grpc_port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise StartupError(
                f"{self.spec.name}: cannot listen on {address}: the port is in use or not allowed"
                f" (set {self.spec.name.upper()}_GRPC_PORT)"
            )
        return server

    async def _check_migrated(self, database: Database) -> None:
        async with database.engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT to_regclass(:t)"), {"t": f"{database.schema}.alembic_version"}
            )
        if found is None:
            raise StartupError(
                f"{self.spec.name}: schema {database.schema!r} at {redact(database.url)} is not"
                f" migrated; run `tally migrate {self.spec.name}`"
            )

    def _start_background(
        self, ctx: ServiceContext, subscriptions: Sequence[Subscription[Any]]
    ) -> None:
        self._spawn(ctx.relay.run(), "outbox-relay")
        uow_factory = self.spec.uow_factory(ctx)
        for sub in subscriptions:
            consumer = EventConsumer(self.spec.name, ctx.bus, uow_factory, ctx.inbox, sub)
            self.consumers.append(consumer)
            self._spawn(consumer.run(), f"consumer-{sub.durable}")
        for i, job in enumerate(self.spec.jobs(ctx)):
            self._spawn(job(), f"job-{i}")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: background task %s died", self.spec.name, name)
                await self._set_serving(False)

        self._tasks.append(asyncio.create_task(guarded(), name=f"{self.spec.name}:{name}"))

    async def _watch_dependencies(self, ctx: ServiceContext) -> None:
        """Answer NOT_SERVING while PostgreSQL or NATS is away, SERVING once back."""
        while True:
            await asyncio.sleep(HEALTH_PROBE_SECONDS)
            db_ok = True
            try:
                async with (
                    asyncio.timeout(HEALTH_PROBE_SECONDS),
                    ctx.database.engine.connect() as c,
                ):
                    await c.execute(text("SELECT 1"))
            except Exception:
                raise_if_cancelling()
                db_ok = False
            await self._set_serving(db_ok and ctx.bus.connected)

    async def _on_bus_change(self, connected: bool) -> None:
        if self.server is not None:
            await self._set_serving(connected)

    async def _set_serving(self, serving: bool) -> None:
        if serving == self._serving and self._service_names:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self._gauges is not None:
            unregister_gauges(self._gauges)
            self._gauges = None
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.server is not None:
            await self.server.stop(grace)
        stuck = await cancel_and_wait(self._tasks, timeout=grace + 5)
        if stuck:
            log.error("%s: background tasks ignored cancellation: %s", self.spec.name, stuck)
        self._tasks.clear()
        if self.context is not None:
            await self.context.bus.close()
            await self.context.database.dispose()
            self.context = None

    async def serve_forever(self) -> None:
        """Start, wait for SIGTERM/SIGINT, stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("%s: shutting down", self.spec.name)
        await self.stop()
