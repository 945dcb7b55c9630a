"""The launchers' signal handling, in a child Python that owns a sleeping child of its own."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

# A launcher: a child in its own session (as _process.spawn starts them), then
# blocking work of the kind named by argv[1]; on Interrupted it "stops" slowly,
# so a second signal has something to cut short.
LAUNCHER = textwrap.dedent(
    """
    import asyncio, subprocess, sys, time
    from services.kit.devstack.interrupts import Interrupted, Interrupts

    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    print(child.pid, flush=True)

    async def work():
        print("working", flush=True)
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            print("cancelled", flush=True)
            raise

    with Interrupts(lambda: [child.pid]) as interrupts:
        try:
            if sys.argv[1] == "async":
                interrupts.run(work())
            else:
                print("working", flush=True)
                time.sleep(600)
        except Interrupted as interrupted:
            print(f"interrupted {interrupted.signum}", flush=True)
            with interrupts.stopping():
                time.sleep(float(sys.argv[2]))
                child.terminate()
                child.wait()
                print("stopped", flush=True)
            sys.exit(interrupted.exit_status)
    """
)


def _launch(mode: str, stop_seconds: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, mode, str(stop_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert proc.stdout.readline().strip() == "working"
    return proc, child


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_interrupts_the_work_and_the_launcher_stops_its_child(
    mode: str, sig: signal.Signals
) -> None:
    proc, child = _launch(mode, stop_seconds=0)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig
    assert output.splitlines()[-2:] == [f"interrupted {int(sig)}", "stopped"], output
    if mode == "async":
        assert "cancelled" in output  # the coroutine unwound before Interrupted
    assert _gone(child)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_second_signal_kills_the_children_at_once(mode: str) -> None:
    proc, child = _launch(mode, stop_seconds=600)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    while "interrupted" not in proc.stdout.readline():
        pass
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130  # the first signal's status
    assert "stopped" not in output  # the slow stop never finished: it was cut short
    assert _gone(child)
