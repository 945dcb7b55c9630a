"""Who a gRPC call is made for: ``x-tally-actor`` (and its role) on every call.

The gateway sends its token's subject; the CLI's channels come from here and
name the operator as ``cli:<user>@<host>``, so the services' audit trail
(services/kit/audit.py) says who ran ``tally billing close-periods`` or a seed.
"""

from __future__ import annotations

import getpass
import socket
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import grpc

from services.kit.audit import ACTOR_HEADER, ROLE_HEADER

CLI_ROLE = "cli"


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME (some containers)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def actor_metadata(actor: str, role: str) -> tuple[tuple[str, str], ...]:
    return ((ACTOR_HEADER, actor), (ROLE_HEADER, role))


def _with(metadata: Any, extra: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [*(metadata or ()), *extra]


class _Details(
    namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _SyncActor(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self.extra = extra

    def _details(self, details: Any) -> _Details:
        return _Details(
            details.method,
            details.timeout,
            _with(details.metadata, self.extra),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._details(details), requests)


class _AioActor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self.extra = extra

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return await continuation(
            grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                _with(details.metadata, self.extra),
                details.credentials,
                details.wait_for_ready,
            ),
            request,
        )


def cli_channel(address: str) -> grpc.Channel:
    """A blocking channel whose calls name the operator (use it with ``with``)."""
    interceptor = _SyncActor(actor_metadata(cli_actor(), CLI_ROLE))
    return grpc.intercept_channel(grpc.insecure_channel(address), interceptor)


def cli_aio_channel(address: str) -> grpc.aio.Channel:
    """An asyncio channel whose unary calls name the operator."""
    interceptor = _AioActor(actor_metadata(cli_actor(), CLI_ROLE))
    return grpc.aio.insecure_channel(address, interceptors=[interceptor])
