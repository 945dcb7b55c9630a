"""Embedded dev stack: real PostgreSQL and NATS servers as child processes.

The mechanism behind ``tally dev up``, the integration fixtures and the e2e
tests, so all three run against the same servers without Docker.
"""

from services.kit.devstack.errors import DevStackError
from services.kit.devstack.nats import EmbeddedNats
from services.kit.devstack.ports import ensure_port_free, free_port, free_ports
from services.kit.devstack.postgres import EmbeddedPostgres

__all__ = [
    "DevStackError",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "ensure_port_free",
    "free_port",
    "free_ports",
]
