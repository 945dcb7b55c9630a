"""Free-port helpers for the embedded dev stack."""

from __future__ import annotations

import contextlib
import errno
import socket

from services.kit.devstack.errors import DevStackError


def _sockaddr(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    # getaddrinfo rather than assuming AF_INET so "::1" and "localhost" work too.
    family, _, _, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, (str(addr[0]), int(addr[1]))


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that nothing listens on right now.

    The kernel picks it; between closing our socket and the server binding it
    another process could take it, so servers still report a bind failure.
    """
    family, addr = _sockaddr(host, 0)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind(addr)
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports, for servers that start one after another.

    ``free_port`` called in a row may return one port twice, since each socket
    is closed before the next draw; here every socket stays bound until all are
    drawn, so the kernel cannot hand out the same port again.
    """
    family, addr = _sockaddr(host, 0)
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(family, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in socks:
            sock.bind(addr)
        return [int(sock.getsockname()[1]) for sock in socks]


def ensure_port_free(port: int, host: str = "127.0.0.1", *, what: str) -> None:
    """Raise :class:`DevStackError` if ``host:port`` cannot be bound.

    A trial bind is closer to what the server will do than a connect probe: it
    also catches a wildcard listener on the same port, while SO_REUSEADDR (which
    PostgreSQL and nats-server set too) keeps TIME_WAIT leftovers of a previous
    run from counting as "in use".
    """
    family, addr = _sockaddr(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DevStackError(f"{what}: port {port} on {host} is already in use") from exc
            # EADDRNOTAVAIL (host is not ours), EACCES (privileged port): say so
            # rather than blaming another process.
            raise DevStackError(f"{what}: cannot bind {host}:{port}: {exc.strerror}") from exc
