"""Bad configuration ends with one clear line and status 1, never a traceback wall."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from services.kit import migrations
from services.kit.devstack import free_port
from tests.conftest import Infra

pytestmark = pytest.mark.integration


def tally(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_PORT"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tally: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    migrations.upgrade("catalog", database_url)
    return database_url


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_unreachable_database(infra: Infra) -> None:
    dead = free_port()
    result = tally(
        "serve",
        "catalog",
        env={
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{dead}/tally",
            "NATS_URL": infra.nats_url,
            "STARTUP_TIMEOUT_SECONDS": "3",
        },
    )
    assert_one_error_line(result, "database unreachable", f"127.0.0.1:{dead}")


def test_malformed_nats_url(migrated: str) -> None:
    result = tally("serve", "catalog", env={"DATABASE_URL": migrated, "NATS_URL": "localhost:4222"})
    assert_one_error_line(result, "NATS_URL", "not a NATS URL")


def test_unreachable_nats(migrated: str) -> None:
    dead = free_port()
    result = tally(
        "serve",
        "catalog",
        env={
            "DATABASE_URL": migrated,
            "NATS_URL": f"nats://127.0.0.1:{dead}",
            "STARTUP_TIMEOUT_SECONDS": "3",
        },
    )
    assert_one_error_line(result, "NATS unreachable", f"127.0.0.1:{dead}")


def test_port_in_use(migrated: str, infra: Infra, listening_port: int) -> None:
    result = tally(
        "serve",
        "catalog",
        env={
            "DATABASE_URL": migrated,
            "NATS_URL": infra.nats_url,
            "CATALOG_GRPC_PORT": str(listening_port),
        },
    )
    assert_one_error_line(result, "CATALOG_GRPC_PORT", f"port {listening_port}", "already in use")


def test_unmigrated_schema(database_url: str, infra: Infra) -> None:
    result = tally(
        "serve", "payments", env={"DATABASE_URL": database_url, "NATS_URL": infra.nats_url}
    )
    assert_one_error_line(result, "not migrated", "tally migrate payments")


def test_gateway_port_in_use(listening_port: int) -> None:
    result = tally("serve", "gateway", env={"GATEWAY_HTTP_PORT": str(listening_port)})
    assert_one_error_line(result, "already in use", str(listening_port))


def test_migrate_against_unreachable_database() -> None:
    result = tally(
        "migrate", "all", env={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    )
    assert_one_error_line(result, "migrating catalog failed")
