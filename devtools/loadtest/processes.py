"""Finding the running suite's processes (services, gateway, PostgreSQL, NATS) by port."""

from __future__ import annotations

from urllib.parse import urlsplit

import psutil

from services.kit.settings import DEFAULT_GRPC_PORTS


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _serve_target(cmdline: list[str]) -> str | None:
    if "services.cli.main" not in cmdline and not any(c.endswith("/tally") for c in cmdline[:2]):
        return None
    if "serve" not in cmdline:
        return None
    index = cmdline.index("serve")
    return cmdline[index + 1] if index + 1 < len(cmdline) else None


def _environ(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return {}


def find_suite(
    addresses: dict[str, str], database_url: str | None, nats_url: str | None
) -> dict[str, int]:
    """``{process name: pid}`` of the suite serving ``addresses``.

    Several suites may run on one machine (tests start their own), so each
    service process is recognised by the gRPC port it was given, PostgreSQL
    and NATS by the port on their command line.
    """
    found: dict[str, int] = {}
    pg_port = str(urlsplit(database_url).port) if database_url else None
    nats_port = str(urlsplit(nats_url).port) if nats_url else None
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline: list[str] = proc.info["cmdline"] or []
        target = _serve_target(cmdline)
        if target in addresses:
            env = _environ(proc)
            given = env.get(f"{target.upper()}_GRPC_PORT", str(DEFAULT_GRPC_PORTS[target]))
            if given == str(_port_of(addresses[target])):
                found[target] = proc.info["pid"]
        elif target == "gateway" and "usage" in addresses:
            default = f"127.0.0.1:{DEFAULT_GRPC_PORTS['usage']}"
            if _environ(proc).get("GATEWAY_USAGE_ADDR", default) == addresses["usage"]:
                found["gateway"] = proc.info["pid"]
        elif proc.info["name"] == "postgres" and pg_port and _flag(cmdline, "-p") == pg_port:
            found["postgres"] = proc.info["pid"]
        elif (
            proc.info["name"] == "nats-server"
            and nats_port
            and _flag(cmdline, "--port") == nats_port
        ):
            found["nats"] = proc.info["pid"]
    return found


def _flag(cmdline: list[str], flag: str) -> str | None:
    if flag in cmdline:
        index = cmdline.index(flag)
        return cmdline[index + 1] if index + 1 < len(cmdline) else None
    return None
