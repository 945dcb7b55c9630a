"""`make run` end to end: `tally dev up` as a user runs it, then Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

import pytest

from services.kit.settings import SERVICE_NAMES
from tests.support.devup import DevUp, dev_up_env, healthz, processes_using, start_dev_up

pytestmark = pytest.mark.e2e


def test_dev_up_serves_every_service_and_stops_without_orphans(tmp_path: Path) -> None:
    data_dir = tmp_path / "tally-home"
    env, gateway_port = dev_up_env()

    seeded_subscriptions: list[str] = []
    for run in (1, 2):  # the second run reuses the data of the first
        up = DevUp.start(data_dir, env)
        try:
            up.wait_for("Tally is up")  # seeded: a signal before this would stop the seed
            status, body = healthz(gateway_port)
            assert status == 200, body
            assert body["services"] == {s: "SERVING" for s in SERVICE_NAMES}
            with urllib.request.urlopen(
                f"http://127.0.0.1:{gateway_port}/openapi.json", timeout=5
            ) as r:
                assert json.loads(r.read())["openapi"].startswith("3.")
        finally:
            up.proc.send_signal(signal.SIGINT)
            up.wait_exit(60)
        proc, output = up.proc, up.output
        assert proc.returncode == 130, output  # 128 + SIGINT, as a shell reports Ctrl-C
        assert "Tally is up" in output
        assert f"http://127.0.0.1:{gateway_port}" in output
        assert re.search(r"stopped .*postgres in ", output), output
        demo = re.search(r"org_demo=(\S+)", output)
        assert demo, output
        seeded_subscriptions.append(demo.group(1))
        # Usage counted once across runs: all new the first time, none the second.
        counted = re.search(r"(\d+) usage events \((\d+) new\)", output)
        assert counted, output
        total, new = int(counted.group(1)), int(counted.group(2))
        assert total > 0
        assert new == (total if run == 1 else 0), output
        assert processes_using(data_dir) == [], f"run {run} left processes behind"
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    # The seed replays by request id: the second run found the first run's subscription.
    assert seeded_subscriptions[0] == seeded_subscriptions[1]


def test_a_second_suite_on_taken_ports_fails_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        env, _ = dev_up_env(USAGE_GRPC_PORT=str(taken))
        proc = start_dev_up(tmp_path / "home", env)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"tally: error: usage (USAGE_GRPC_PORT): port {taken}" in output
    assert "Traceback" not in output
    assert processes_using(tmp_path / "home") == []
