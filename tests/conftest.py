"""Session-wide real servers: PostgreSQL and NATS, started by the project itself.

``DATABASE_URL``/``NATS_URL`` in the environment point the tests at servers
someone else runs (a CI service, testcontainers); otherwise the embedded
launcher starts both on free ports in a temporary folder. Each test module gets
a fresh database and a NATS server with no streams, so modules never see each
other's data.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from nats.js.errors import NotFoundError

from services.kit.bus import EventBus
from services.kit.devstack import EmbeddedNats, EmbeddedPostgres, free_port
from tests.support.databases import create_database, drop_database

# The e2e fault tests restart suite processes from a test process full of gRPC
# channels; gRPC's fork handlers then crash the child between fork and exec
# ("Other threads are currently calling into gRPC, skipping fork() handlers").
# Read when gRPC initialises, so it must be set before any test creates a channel.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# Hypothesis's per-example deadline is a wall-clock assertion: on a loaded
# 2-core machine it failed examples that were merely slow. Tests never assert
# on time, so the deadline is off for every property test.
hypothesis_settings.register_profile("tally", deadline=None)
hypothesis_settings.load_profile("tally")


@dataclass(frozen=True)
class Infra:
    admin_database_url: str  # a database we may CREATE DATABASE from
    nats_url: str

    def database_url(self, name: str) -> str:
        base, _, _ = self.admin_database_url.rpartition("/")
        return f"{base}/{name}"


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    database_url = os.environ.get("DATABASE_URL")
    nats_url = os.environ.get("NATS_URL")
    if nats_url and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        # Each module empties the streams of the NATS it uses (``nats_url``),
        # so workers sharing one server would wipe each other's.
        pytest.fail(
            "NATS_URL is shared by every test worker: run with TEST_WORKERS=1 "
            "or leave NATS_URL unset so each worker starts its own",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("infra")
    postgres = nats = None
    try:
        if not database_url:
            postgres = EmbeddedPostgres(root / "pg", free_port(), durable=False, log_dir=root)
            postgres.start()
            database_url = postgres.dsn
        if not nats_url:
            nats = EmbeddedNats(root / "nats", free_port(), log_dir=root)
            nats.start()
            nats_url = nats.url
        yield Infra(database_url, nats_url)
    finally:
        if nats is not None:
            nats.stop()
        if postgres is not None:
            postgres.stop()


def _database_name(node: pytest.Item | pytest.Module | pytest.Collector) -> str:
    stem = re.sub(r"[^a-z0-9]+", "_", Path(str(node.path)).stem.lower())[:40]
    return f"t_{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def database_url(infra: Infra, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, empty database for this test module."""
    name = _database_name(request.node)
    await create_database(infra.admin_database_url, name)
    try:
        yield infra.database_url(name)
    finally:
        await drop_database(infra.admin_database_url, name)


@pytest.fixture(scope="module")
async def nats_url(infra: Infra) -> AsyncIterator[str]:
    """NATS with no streams left over from an earlier module."""
    bus = await EventBus.connect(infra.nats_url, name="tests-reset")
    try:
        streams = await bus.js.streams_info()
        for stream in streams:
            with contextlib.suppress(NotFoundError):
                await bus.js.delete_stream(stream.config.name or "")
    finally:
        await bus.close()
    yield infra.nats_url
