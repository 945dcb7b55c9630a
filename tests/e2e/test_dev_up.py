"""`make run` end to end: `tally dev up` as a user runs it, then Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from services.kit.devstack import free_ports
from services.kit.settings import SERVICE_NAMES

pytestmark = pytest.mark.e2e


def _healthz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(path) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _start(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "dev", "up", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            status, body = _healthz(port)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("gateway /healthz never answered 200")


def test_dev_up_serves_every_service_and_stops_without_orphans(tmp_path: Path) -> None:
    data_dir = tmp_path / "tally-home"
    ports = iter(free_ports(1 + 2 * len(SERVICE_NAMES)))
    gateway_port = next(ports)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_PORT", "_ADDR"))}
    env["GATEWAY_HTTP_PORT"] = str(gateway_port)
    for service in SERVICE_NAMES:
        env[f"{service.upper()}_GRPC_PORT"] = str(next(ports))
        env[f"{service.upper()}_HTTP_PORT"] = str(next(ports))

    seeded_subscriptions: list[str] = []
    for run in (1, 2):  # the second run reuses the data of the first
        proc = _start(data_dir, env)
        try:
            body = _wait_healthy(proc, gateway_port)
            assert body["services"] == {s: "SERVING" for s in SERVICE_NAMES}
            with urllib.request.urlopen(
                f"http://127.0.0.1:{gateway_port}/openapi.json", timeout=5
            ) as r:
                assert json.loads(r.read())["openapi"].startswith("3.")
        finally:
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
        assert "Tally is up" in output
        assert f"http://127.0.0.1:{gateway_port}" in output
        assert "stopped in" in output
        demo = re.search(r"org_demo=(\S+)", output)
        assert demo, output
        seeded_subscriptions.append(demo.group(1))
        # Usage counted once across runs: all new the first time, none the second.
        counted = re.search(r"(\d+) usage events \((\d+) new\)", output)
        assert counted, output
        total, new = int(counted.group(1)), int(counted.group(2))
        assert total > 0
        assert new == (total if run == 1 else 0), output
        assert _processes_using(data_dir) == [], f"run {run} left processes behind"
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    # The seed replays by request id: the second run found the first run's subscription.
    assert seeded_subscriptions[0] == seeded_subscriptions[1]


def test_a_second_suite_on_taken_ports_fails_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_PORT", "_ADDR"))}
        ports = iter(free_ports(1 + 2 * len(SERVICE_NAMES)))
        env["GATEWAY_HTTP_PORT"] = str(next(ports))
        for service in SERVICE_NAMES:
            env[f"{service.upper()}_GRPC_PORT"] = str(next(ports))
            env[f"{service.upper()}_HTTP_PORT"] = str(next(ports))
        env["USAGE_GRPC_PORT"] = str(taken)
        proc = _start(tmp_path / "home", env)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"tally: error: usage (USAGE_GRPC_PORT): port {taken}" in output
    assert "Traceback" not in output
    assert _processes_using(tmp_path / "home") == []
