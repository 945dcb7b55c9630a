"""Where a client finds each service: ``<SERVICE>_ADDR`` or the README's port on localhost.

Every `tally` command that calls a service resolves its address here, so one
environment variable per service works for all of them."""

from __future__ import annotations

import os

from services.kit.settings import DEFAULT_GRPC_PORTS, SERVICE_NAMES


def service_address(service: str, override: str | None = None) -> str:
    """``override`` (a ``--address`` flag) first, then ``<SERVICE>_ADDR``, then the default."""
    return override or os.environ.get(
        f"{service.upper()}_ADDR", f"127.0.0.1:{DEFAULT_GRPC_PORTS[service]}"
    )


def all_service_addresses() -> dict[str, str]:
    return {s: service_address(s) for s in SERVICE_NAMES}
