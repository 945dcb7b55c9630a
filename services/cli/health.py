"""``tally health <service|gateway|console>``: the container health check.

Compose and plain ``docker run`` have no gRPC probe of their own, so the image
probes itself: a service is healthy when its standard ``grpc.health.v1`` Check
answers SERVING on the port its settings name; the gateway is healthy when it
answers ``/healthz`` at all (a 503 there names a backend that is down, which
that backend's own check already reports). Exit 0 healthy, 1 not, and one line
saying why either way.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from services.kit.settings import SERVICE_NAMES

if TYPE_CHECKING:
    from console.settings import ConsoleSettings

EXIT_UNHEALTHY = 1
# A service bound to every interface is probed on the loopback one.
_ANY_HOST = {"", "0.0.0.0", "::", "[::]"}


def local_address(host: str, port: int) -> str:
    return f"127.0.0.1:{port}" if host in _ANY_HOST else f"{host}:{port}"


def grpc_status(address: str, timeout: float) -> str:
    """SERVING, NOT_SERVING, ... or ``UNREACHABLE (<code>)``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            return f"UNREACHABLE ({code})"
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return name


def _check_service(service: str, address: str | None, timeout: float) -> int:
    if address is None:
        from services.kit.settings import load_settings, settings_class_for

        settings = load_settings(settings_class_for(service))
        address = local_address(settings.grpc_host, settings.grpc_port)
    status = grpc_status(address, timeout)
    print(f"{service} {address} {status}")
    return 0 if status == "SERVING" else EXIT_UNHEALTHY


def _check_http(process: str, address: str | None, timeout: float) -> int:
    """The gateway or the console: healthy when its ``/healthz`` answers."""
    import httpx

    if address is None:
        from services.kit.settings import GatewaySettings, load_settings

        settings: GatewaySettings | ConsoleSettings
        if process == "console":
            from console.settings import ConsoleSettings

            settings = load_settings(ConsoleSettings)
        else:
            settings = load_settings(GatewaySettings)
        address = local_address(settings.http_host, settings.http_port)
    try:
        reply = httpx.get(f"http://{address}/healthz", timeout=timeout)
    except httpx.HTTPError as exc:
        print(f"{process} {address} UNREACHABLE ({type(exc).__name__})")
        return EXIT_UNHEALTHY
    print(f"{process} {address} HTTP {reply.status_code} {reply.text.strip()}")
    return 0 if reply.status_code in (200, 503) else EXIT_UNHEALTHY


def _health(args: argparse.Namespace) -> int:
    if args.service in ("gateway", "console"):
        return _check_http(args.service, args.address, args.timeout)
    return _check_service(args.service, args.address, args.timeout)


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    health = commands.add_parser(
        "health",
        help="exit 0 when a service answers gRPC health SERVING (the gateway: /healthz answers)",
    )
    health.add_argument("service", choices=[*SERVICE_NAMES, "gateway", "console"])
    health.add_argument(
        "--address",
        help="host:port to probe (default: the port in the service's settings, on 127.0.0.1)",
    )
    health.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)"
    )
    health.set_defaults(func=_health)


def standalone_parser() -> argparse.ArgumentParser:
    """``tally health`` alone, for a start that imports nothing else."""
    parser = argparse.ArgumentParser(prog="tally")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser
