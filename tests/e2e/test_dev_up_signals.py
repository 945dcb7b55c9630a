"""`make run` stops at any moment: a signal while migrating, seeding or serving
stops every process it started, a second one kills them at once, and the
next run finishes an interrupted seed without counting anything twice."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.kit.settings import SERVICE_NAMES
from tests.support.devup import DevUp, dev_up_env, gone_within, healthz, processes_using

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 3
# SHUTDOWN_GRACE_SECONDS plus a few seconds: PostgreSQL's fast shutdown, NATS.
STOP_BOUND = GRACE_SECONDS + 12


def _interrupt(run: DevUp, data_dir: Path, *signals: signal.Signals) -> str:
    """Send ``signals`` (a short pause apart); every child must be gone within the bound."""
    children = run.descendants()
    assert children, run.output
    for number, sig in enumerate(signals):
        if number:
            time.sleep(0.3)
        run.proc.send_signal(sig)
    code = run.wait_exit(STOP_BOUND)
    assert code == 128 + signals[0], run.output
    left = gone_within(children, STOP_BOUND) + processes_using(data_dir)
    assert left == [], f"left running: {left}\n{run.output}"
    return run.output


@pytest.fixture
def runs() -> Iterator[list[DevUp]]:
    started: list[DevUp] = []
    yield started
    for run in started:
        run.ensure_stopped()


def test_a_signal_at_any_stage_stops_everything_and_the_seed_resumes(
    tmp_path: Path, runs: list[DevUp]
) -> None:
    data_dir = tmp_path / "tally-home"
    env, gateway_port = dev_up_env(SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))

    def start() -> DevUp:
        runs.append(DevUp.start(data_dir, env))
        return runs[-1]

    # (a) while migrating a fresh database
    run = start()
    run.wait_for("migrating")
    output = _interrupt(run, data_dir, signal.SIGTERM)
    assert "SIGTERM: stopping ..." in output
    assert re.search(r"stopped .*postgres.* in ", output), output
    assert "Traceback" not in output

    # (b) twice during the seed: the second signal kills at once
    run = start()
    run.wait_for("seeding demo data")
    time.sleep(1)
    output = _interrupt(run, data_dir, signal.SIGINT, signal.SIGINT)
    assert "killing every process at once" in output
    assert "Tally is up" not in output, "the seed ended before the signals: nothing was tested"

    # (c) once during the seed: a graceful stop of everything
    run = start()
    run.wait_for("seeding demo data")
    time.sleep(1)
    output = _interrupt(run, data_dir, signal.SIGTERM)
    assert "Tally is up" not in output, "the seed ended before the signal: nothing was tested"
    stopped = re.search(r"stopped (.*) in ", output)
    assert stopped, output
    assert set(stopped.group(1).split(", ")) >= {*SERVICE_NAMES, "gateway", "nats", "postgres"}
    assert "Traceback" not in output

    # The next run finishes the seed: every org, every card, the ledger clean.
    run = start()
    run.wait_for("Tally is up")
    status, body = healthz(gateway_port)
    assert status == 200 and body["services"] == {s: "SERVING" for s in SERVICE_NAMES}
    output = run.output
    assert "note:" not in output, output
    demo = re.search(r"demo data: (\d+) orgs", output)
    assert demo and int(demo.group(1)) == 6, output
    database_url = re.search(r"postgres\s+(postgresql://\S+)", output)
    payments = re.search(r"payments\s+(127\.0\.0\.1:\d+)", output)
    assert database_url and payments, output
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "verify",
            "--database-url",
            database_url.group(1),
            "--payments-addr",
            payments.group(1),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # (d) while serving
    _interrupt(run, data_dir, signal.SIGTERM)
