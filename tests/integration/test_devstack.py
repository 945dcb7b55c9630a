"""The embedded dev stack against real servers: no mocks, real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import psutil
import pytest

from services.kit.devstack import (
    DevStackError,
    EmbeddedNats,
    EmbeddedPostgres,
    ensure_port_free,
    free_port,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

# A launcher in miniature: starts one server, reports its pid, then idles
# until the test SIGKILLs it.
LAUNCHER = """
import sys, time
from pathlib import Path
from services.kit.devstack import EmbeddedNats, EmbeddedPostgres, free_port
kind, data = sys.argv[1], Path(sys.argv[2])
if kind == "nats":
    server = EmbeddedNats(data, free_port())
else:
    server = EmbeddedPostgres(data, free_port(), durable=False)
server.start()
print(server.pid, flush=True)
time.sleep(120)
"""


def servers_using(exe: str, directory: Path) -> list[psutil.Process]:
    """Live ``exe`` processes naming ``directory`` on their command line or as cwd.

    cwd catches postgres backends, whose retitled command lines no longer
    mention the data directory.
    """
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["name"] != exe or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(directory) in " ".join(info["cmdline"] or []) or info["cwd"] == str(directory):
            found.append(proc)
    return found


def wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def start_over_recycled_pid_lock(data: Path) -> EmbeddedPostgres:
    """Start on ``data`` after planting a lock file naming a live, unrelated
    process of the server's own user (a recycled pid): postgres alone refuses."""
    with subprocess.Popen(["sleep", "30"], user=data.stat().st_uid) as unrelated:
        (data / "postmaster.pid").write_text(f"{unrelated.pid}\n{data}\n")
        try:
            server = EmbeddedPostgres(data, free_port(), durable=False)
            server.start()
            return server
        finally:
            unrelated.kill()


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_postgres_serves_creates_databases_and_keeps_data(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    pg = EmbeddedPostgres(data, free_port(), durable=False)
    pg.start()
    try:
        assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

        # Called with this test's event loop running: psql, not asyncio.
        pg.create_database("x")
        pg.create_database("x")
        conn = await asyncpg.connect(pg.dsn_for("x"))
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
        finally:
            await conn.close()

        with pytest.raises(DevStackError, match="already running"):
            EmbeddedPostgres(data, free_port(), durable=False).start()
    finally:
        pg.stop()
    assert servers_using("postgres", data) == []
    pg.stop()  # idempotent

    restarted = start_over_recycled_pid_lock(data)
    try:
        conn = await asyncpg.connect(restarted.dsn_for("x"))
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "survives"
        finally:
            await conn.close()
        # A crash: the postmaster dies without cleaning up its lock file.
        assert restarted.pid is not None
        os.kill(restarted.pid, signal.SIGKILL)
    finally:
        restarted.stop()
    assert (data / "postmaster.pid").exists()
    leftovers = servers_using("postgres", data)
    assert all(wait_gone(proc, 5) for proc in leftovers)

    with EmbeddedPostgres(data, free_port(), durable=False) as recovered:
        conn = await asyncpg.connect(recovered.dsn_for("x"))
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "survives"
        finally:
            await conn.close()
    assert servers_using("postgres", data) == []


def test_postgres_startup_failure_is_one_line_with_the_log_reason(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    with EmbeddedPostgres(data, free_port(), durable=False):
        pass
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\nbogus_setting = 1\n")

    with pytest.raises(DevStackError) as failure:
        EmbeddedPostgres(data, free_port(), durable=False).start()
    message = str(failure.value)
    assert "\n" not in message
    assert "exited with code" in message
    assert "bogus_setting" in message
    assert servers_using("postgres", data) == []


async def test_nats_jetstream_persists_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    server = EmbeddedNats(data, free_port())
    server.start()
    try:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        nc = await nats.connect(server.url, connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream()
            await js.add_stream(name="DEVSTACK", subjects=["devstack.>"])
            ack = await js.publish("devstack.hello", b"hi", headers={"Nats-Msg-Id": "m-1"})
            assert (ack.stream, ack.seq) == ("DEVSTACK", 1)
        finally:
            await nc.close()

        with pytest.raises(DevStackError, match="already running"):
            EmbeddedNats(data, free_port()).start()
    finally:
        server.stop()
    assert servers_using("nats-server", data) == []
    server.stop()  # idempotent

    with EmbeddedNats(data, free_port()) as restarted:
        nc = await nats.connect(restarted.url, connect_timeout=2, allow_reconnect=False)
        try:
            info = await nc.jetstream().stream_info("DEVSTACK")
            assert info.state.messages == 1
        finally:
            await nc.close()
    assert servers_using("nats-server", data) == []


def test_port_in_use_is_reported_before_anything_starts(
    tmp_path: Path, listening_port: int
) -> None:
    port = listening_port
    with pytest.raises(DevStackError, match=f"^db: port {port} on 127.0.0.1 is already in use$"):
        ensure_port_free(port, what="db")
    with pytest.raises(DevStackError, match=f"^postgres: port {port} .* already in use$"):
        EmbeddedPostgres(tmp_path / "pg", port).start()
    # Refused before initdb, so no half-made cluster is left behind.
    assert not (tmp_path / "pg").exists()
    with pytest.raises(DevStackError, match=f"^nats: port {port} .* already in use$"):
        EmbeddedNats(tmp_path / "nats", port).start()
    with pytest.raises(DevStackError, match=f"^nats monitor: port {port} .* already in use$"):
        EmbeddedNats(tmp_path / "nats", free_port(), monitor_port=port).start()


@pytest.mark.parametrize("kind", ["nats", "postgres"])
def test_server_dies_with_a_sigkilled_launcher(tmp_path: Path, kind: str) -> None:
    # For postgres (as root) this also proves the parent-death signal survives
    # the switch to the unprivileged server user.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, kind, str(tmp_path / kind)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    server: psutil.Process | None = None
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline()
        assert line.strip().isdigit(), launcher.stderr.read() if launcher.stderr else line
        server = psutil.Process(int(line))
        assert server.is_running()
        # Its own session: a Ctrl-C in the launcher's terminal must not reach it.
        assert os.getsid(server.pid) == server.pid != os.getsid(launcher.pid)
        launcher.kill()
        launcher.wait()
        assert wait_gone(server, 5), f"{kind} outlived its SIGKILLed launcher"
    finally:
        launcher.kill()
        launcher.wait()
        if server is not None and not wait_gone(server, 0.1):
            server.kill()


def test_server_started_from_a_worker_thread_outlives_that_thread(tmp_path: Path) -> None:
    # The parent-death signal follows the forking *thread*; the spawner thread
    # must keep a server started from a short-lived thread alive.
    server = EmbeddedNats(tmp_path / "nats", free_port())
    worker = threading.Thread(target=server.start)
    worker.start()
    worker.join()
    try:
        time.sleep(0.3)
        assert server.is_running
    finally:
        server.stop()
