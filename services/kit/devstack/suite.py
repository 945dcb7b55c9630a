"""The whole suite as separate processes on one machine.

Used by ``tally dev up`` (``make run``) and by the end-to-end tests, so what a
developer runs is what the tests run: embedded PostgreSQL and NATS, migrations,
then the five services and the gateway, each its own ``tally serve`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.kit.devstack._process import spawn, stop_child, stop_children
from services.kit.devstack.errors import DevStackError
from services.kit.devstack.interrupts import Interrupts
from services.kit.devstack.nats import EmbeddedNats
from services.kit.devstack.ports import ensure_port_free, free_port, free_ports
from services.kit.devstack.postgres import EmbeddedPostgres
from services.kit.devstack.stripe import StripeEmulatorProcess, stripe_emulator_wanted
from services.kit.rpc.channels import replicas_target
from services.kit.settings import (
    DEFAULT_GATEWAY_PORT,
    DEFAULT_GRPC_PORTS,
    DEFAULT_HTTP_PORTS,
    SERVICE_NAMES,
)

DATABASE = "tally"


def _quiet(step: str) -> None:
    pass


PROCESSES = (*SERVICE_NAMES, "gateway", "console")
# The billing console's HTTP port (console/settings.py), overridable by CONSOLE_HTTP_PORT.
DEFAULT_CONSOLE_PORT = 8090


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise DevStackError(f"{name}={value!r} is not a port number") from None


@dataclass
class SuitePorts:
    postgres: int
    nats: int
    gateway: int
    services: dict[str, int]
    http: dict[str, int] = field(default_factory=dict)
    # The Stripe emulator's port (0: a free one, when the emulator runs at all).
    stripe: int = 0
    console: int = DEFAULT_CONSOLE_PORT

    @classmethod
    def defaults(cls) -> SuitePorts:
        """README ports for the services and gateway, each overridable by environment.

        PostgreSQL and NATS take ``TALLY_DEV_PG_PORT``/``TALLY_DEV_NATS_PORT`` or
        a free port, so a system PostgreSQL on 5432 never gets in the way.
        """
        postgres, nats = free_ports(2)
        return cls(
            postgres=_env_port("TALLY_DEV_PG_PORT", 0) or postgres,
            nats=_env_port("TALLY_DEV_NATS_PORT", 0) or nats,
            gateway=_env_port("GATEWAY_HTTP_PORT", DEFAULT_GATEWAY_PORT),
            services={
                s: _env_port(f"{s.upper()}_GRPC_PORT", DEFAULT_GRPC_PORTS[s]) for s in SERVICE_NAMES
            },
            http={
                s: _env_port(f"{s.upper()}_HTTP_PORT", DEFAULT_HTTP_PORTS[s]) for s in SERVICE_NAMES
            },
            stripe=_env_port("TALLY_DEV_STRIPE_PORT", 0),
            console=_env_port("CONSOLE_HTTP_PORT", DEFAULT_CONSOLE_PORT),
        )

    @classmethod
    def free(cls) -> SuitePorts:
        ports = iter(free_ports(5 + 2 * len(SERVICE_NAMES)))
        return cls(
            next(ports),
            next(ports),
            next(ports),
            {s: next(ports) for s in SERVICE_NAMES},
            {s: next(ports) for s in SERVICE_NAMES},
            next(ports),
            next(ports),
        )


@dataclass
class Suite:
    data_dir: Path
    ports: SuitePorts = field(default_factory=SuitePorts.defaults)
    durable: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    # Extra API-only processes per service (``subscriptions-2``, ...), each on
    # ports of its own; ``service_target`` spreads calls over all of them.
    api_replicas: dict[str, int] = field(default_factory=dict)
    replica_ports: dict[str, list[tuple[int, int]]] = field(init=False, default_factory=dict)
    postgres: EmbeddedPostgres = field(init=False)
    nats: EmbeddedNats = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(init=False, default_factory=dict)
    # The local Stripe emulator, when no STRIPE_API_KEY is given and payments can use it.
    stripe: StripeEmulatorProcess | None = field(init=False, default=None)
    stopped: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(
            self.data_dir / "postgres",
            self.ports.postgres,
            durable=self.durable,
            log_dir=self.log_dir,
        )
        self.nats = EmbeddedNats(self.data_dir / "nats", self.ports.nats, log_dir=self.log_dir)
        extra = sum(self.api_replicas.values())
        drawn = iter(free_ports(2 * extra)) if extra else iter(())
        for service, count in self.api_replicas.items():
            if service not in SERVICE_NAMES:
                raise DevStackError(f"no service {service!r} to replicate")
            self.replica_ports[service] = [(next(drawn), next(drawn)) for _ in range(count)]
        if stripe_emulator_wanted({**os.environ, **self.extra_env}):
            self.stripe = StripeEmulatorProcess(
                self.ports.stripe or free_port(),
                webhook_url=f"{self.service_http_url('payments')}/webhooks/stripe",
                log_dir=self.log_dir,
                state_file=self.data_dir / "stripe" / "state.json",
            )

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def database_url(self) -> str:
        return self.postgres.dsn_for(DATABASE)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.console}"

    def service_address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports.services[service]}"

    def service_addresses(self, service: str) -> list[str]:
        """The service's own address, then its API replicas'."""
        replicas = self.replica_ports.get(service, [])
        return [self.service_address(service), *(f"127.0.0.1:{g}" for g, _ in replicas)]

    def service_target(self, service: str) -> str:
        """One gRPC target over every process of ``service`` (use with round robin)."""
        return replicas_target(self.service_addresses(service))

    def service_http_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.http[service]}"

    def env(self) -> dict[str, str]:
        """The environment every suite process gets: shared URLs, per-service ports."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            DATABASE_URL=self.database_url,
            NATS_URL=self.nats.url,
            GATEWAY_HTTP_PORT=str(self.ports.gateway),
            CONSOLE_HTTP_PORT=str(self.ports.console),
            CONSOLE_GATEWAY_URL=self.gateway_url,
            PYTHONUNBUFFERED="1",
        )
        for service, port in self.ports.services.items():
            env[f"{service.upper()}_GRPC_PORT"] = str(port)
            # Every process of the service: the gateway's channels go round robin.
            env[f"GATEWAY_{service.upper()}_ADDR"] = self.service_target(service)
            # Where one service (invoicing's INVOICING_USAGE_ADDR reads USAGE_ADDR
            # too) and the CLIs find another: off the default ports, nothing else would.
            env[f"{service.upper()}_ADDR"] = self.service_address(service)
        for service, port in self.ports.http.items():
            env[f"{service.upper()}_HTTP_PORT"] = str(port)
        if "payments" in self.ports.http:
            env["GATEWAY_PAYMENTS_WEBHOOK_URL"] = (
                f"{self.service_http_url('payments')}/webhooks/stripe"
            )
        env.update(self.extra_env)
        return env

    def check_ports(self) -> None:
        """Refuse to start half a suite: every port must be free before anything runs."""
        ensure_port_free(self.ports.gateway, what="gateway (GATEWAY_HTTP_PORT)")
        ensure_port_free(self.ports.console, what="console (CONSOLE_HTTP_PORT)")
        for service, port in self.ports.services.items():
            ensure_port_free(port, what=f"{service} ({service.upper()}_GRPC_PORT)")
        for service, port in self.ports.http.items():
            ensure_port_free(port, what=f"{service} ({service.upper()}_HTTP_PORT)")

    def start_infra(self) -> None:
        self.postgres.start()
        self.nats.start()
        self.postgres.create_database(DATABASE)
        if self.stripe is not None:
            self.stripe.start()

    def migrate(self) -> None:
        from services.kit import migrations

        for service in SERVICE_NAMES:
            migrations.upgrade(service, self.database_url)

    def process_env(self, name: str) -> dict[str, str]:
        env = self.env()
        if name == "payments" and self.stripe is not None:
            env.update(self.stripe.payments_env())
            env.update(self.extra_env)
        if name == "console" and env.get("GATEWAY_JWT_HS256_SECRET"):
            # The console's dev sign-in signs with whatever secret the gateway checks.
            env.setdefault("CONSOLE_DEV_TOKEN_SECRET", env["GATEWAY_JWT_HS256_SECRET"])
        return env

    def start_process(
        self, name: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start one process; ``env`` overrides this start only (an API-only replica, say)."""
        proc = spawn(
            [sys.executable, "-m", "services.cli.main", "serve", name],
            log_path=self.log_dir / f"{name}.log",
            deathsig=signal.SIGTERM,
            env={**self.process_env(name), **(env or {})},
        )
        self.processes[name] = proc
        return proc

    def start_processes(self) -> None:
        for name in PROCESSES:
            self.start_process(name)
        for service, ports in self.replica_ports.items():
            for number, (grpc_port, http_port) in enumerate(ports, start=2):
                self.start_replica(service, number, grpc_port, http_port)

    def start_replica(
        self, service: str, number: int, grpc_port: int, http_port: int
    ) -> subprocess.Popen[bytes]:
        """An API-only process of ``service``: it answers calls, runs no consumer or job."""
        prefix = service.upper()
        env = {
            **self.process_env(service),
            f"{prefix}_GRPC_PORT": str(grpc_port),
            f"{prefix}_HTTP_PORT": str(http_port),
            f"{prefix}_WORKER_BILLING_ENABLED": "false",
        }
        name = f"{service}-{number}"
        proc = spawn(
            [sys.executable, "-m", "services.cli.main", "serve", service],
            log_path=self.log_dir / f"{name}.log",
            deathsig=signal.SIGTERM,
            env=env,
        )
        self.processes[name] = proc
        return proc

    def health(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"{self.gateway_url}/healthz", timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, object]:
        """Until the gateway says all five are SERVING; fail fast if a process dies."""
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while time.monotonic() < deadline:
            self.raise_if_exited()
            try:
                status, last = self.health()
                if status == 200:
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise DevStackError(
            f"suite not healthy after {timeout:g}s: {last or 'gateway not answering'}"
        )

    def wait_console(self, timeout: float = 60.0) -> None:
        """Until the console answers its /healthz; fail fast if a process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_exited()
            try:
                with urllib.request.urlopen(f"{self.console_url}/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise DevStackError(f"console not answering {self.console_url}/healthz after {timeout:g}s")

    def raise_if_exited(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise DevStackError(
                    f"{name} exited with status {proc.returncode}: {self.last_log_line(name)}"
                )

    def last_log_line(self, name: str) -> str:
        try:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errors = [line for line in lines if line.startswith("tally: error:")]
        return (errors or lines or ["(empty log)"])[-1]

    def stop_process(
        self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 15
    ) -> None:
        proc = self.processes.get(name)
        if proc is not None:
            stop_child(proc, sig, timeout)

    # -- faults: what the end-to-end fault tests do to a running suite --------

    def kill_process(self, name: str) -> None:
        """``kill -9``: no graceful stop, no chance to publish or ack anything."""
        self.stop_process(name, signal.SIGKILL)

    def restart_process(
        self,
        name: str,
        sig: signal.Signals = signal.SIGKILL,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Stop one process with ``sig`` and start it again on the same ports."""
        self.stop_process(name, sig)
        self.start_process(name, env)

    def restart_nats(self) -> None:
        """Same port, same JetStream store: what a rolling NATS upgrade looks like."""
        self.nats.stop()
        self.nats.start()

    def restart_postgres(self) -> None:
        """Same port and data directory; the services must reconnect on their own."""
        self.postgres.stop()
        self.postgres.start()

    def grpc_health(self, service: str, timeout: float = 1.0) -> str:
        """The service's own gRPC health answer (SERVING, NOT_SERVING) or UNAVAILABLE."""
        return self.grpc_health_at(self.service_address(service), timeout)

    @staticmethod
    def grpc_health_at(address: str, timeout: float = 1.0) -> str:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout
                )
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                return code.name if code is not None else "UNAVAILABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def wait_serving(self, services: tuple[str, ...] = SERVICE_NAMES, timeout: float = 60) -> None:
        """Until each process of each service answers SERVING; fail fast if one died."""
        deadline = time.monotonic() + timeout
        waiting = [a for s in services for a in self.service_addresses(s)]
        while waiting:
            self.raise_if_exited()
            waiting = [a for a in waiting if self.grpc_health_at(a) != "SERVING"]
            if not waiting:
                return
            if time.monotonic() > deadline:
                states = ", ".join(f"{a}={self.grpc_health_at(a)}" for a in waiting)
                raise DevStackError(f"not SERVING after {timeout:g}s: {states}")
            time.sleep(0.2)

    def alive(self) -> list[str]:
        """What is running now, in the order :meth:`stop` stops it."""
        names = [name for name, proc in self.processes.items() if proc.poll() is None]
        names.sort(key=lambda name: name != "gateway")
        if self.stripe is not None and self.stripe.pid is not None:
            names.append("stripe")
        names += [name for name in ("nats", "postgres") if getattr(self, name).pid is not None]
        return names

    def child_pids(self) -> list[int]:
        """Every child's pid (each leads its own process group), for a hard stop."""
        pids = [proc.pid for proc in self.processes.values() if proc.poll() is None]
        servers = (self.stripe, self.nats, self.postgres)
        return pids + [pid for server in servers if server and (pid := server.pid) is not None]

    def stop(self, timeout: float = 15) -> list[str]:
        """Gateway first, then every service together, then NATS, then PostgreSQL; idempotent.

        The services stop together, each draining its in-flight calls within
        its own ``SHUTDOWN_GRACE_SECONDS``, so stopping takes one grace period
        rather than one per process. Returns what was running; every name
        stopped so far is kept in ``stopped`` (a failed start stops itself).
        """
        running = self.alive()
        self.stopped += [name for name in running if name not in self.stopped]
        self.stop_process("gateway", timeout=timeout)
        stop_children(list(self.processes.values()), signal.SIGTERM, timeout)
        if self.stripe is not None:
            self.stripe.stop()
        self.nats.stop()
        self.postgres.stop()
        return running

    @contextmanager
    def started(
        self, timeout: float = 60.0, progress: Callable[[str], None] = _quiet
    ) -> Iterator[Interrupts]:
        """The suite running for the ``with`` block, stopped after it whatever happens.

        From the main thread, the first SIGINT or SIGTERM anywhere in the block
        (starting, migrating, the caller's own work) stops the suite in order
        and leaves as :class:`Interrupted`; a second one kills every process
        at once. Run the caller's coroutines through the yielded
        ``Interrupts.run`` so a signal cancels them cleanly.
        """
        with Interrupts(self.child_pids) as interrupts:
            try:
                self.start(timeout, progress)
                yield interrupts
            finally:
                with interrupts.stopping():
                    if interrupts.signum is not None:
                        progress(f"{signal.Signals(interrupts.signum).name}: stopping ...")
                    began = time.monotonic()
                    self.stop()
                    took = time.monotonic() - began
                    progress(f"stopped {', '.join(self.stopped) or 'nothing'} in {took:.1f}s")

    def start(self, timeout: float = 60.0, progress: Callable[[str], None] = _quiet) -> None:
        """Start everything; on any failure or interruption stop what had started.

        ``progress`` hears each step as it begins (``tally dev up`` prints them).
        """
        self.check_ports()
        try:
            progress("starting postgres and nats ...")
            self.start_infra()
            progress("migrating ...")
            self.migrate()
            progress("starting services ...")
            self.start_processes()
            self.wait_healthy(timeout)
            self.wait_console(timeout)
            if self.replica_ports:
                # The gateway's health covers each service's first process only.
                self.wait_serving(tuple(self.replica_ports), timeout)
        except BaseException:
            self.stop()
            raise
