"""free_ports: ports for servers that start one after another."""

from __future__ import annotations

import socket

from services.kit.devstack import free_ports
from services.kit.devstack.suite import SuitePorts
from services.kit.settings import SERVICE_NAMES


def test_ports_drawn_together_are_distinct_and_free() -> None:
    for _ in range(20):
        ports = free_ports(40)
        assert len(set(ports)) == 40
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing kept it


def test_a_free_suite_never_gives_two_servers_one_port() -> None:
    for _ in range(20):
        p = SuitePorts.free()
        every = [p.postgres, p.nats, p.gateway, p.stripe, *p.services.values(), *p.http.values()]
        assert len(every) == 4 + 2 * len(SERVICE_NAMES)
        assert len(set(every)) == len(every)
