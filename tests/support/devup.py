"""`tally dev up` as a user runs it: a subprocess on free ports, its output, its children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from services.kit.devstack import free_ports
from services.kit.settings import SERVICE_NAMES


def dev_up_env(**extra: str) -> tuple[dict[str, str], int]:
    """The caller's environment, minus its URLs and ports, on free ports; and the gateway's."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_PORT", "_ADDR"))}
    ports = iter(free_ports(2 + 2 * len(SERVICE_NAMES)))
    gateway_port = next(ports)
    env["GATEWAY_HTTP_PORT"] = str(gateway_port)
    env["CONSOLE_HTTP_PORT"] = str(next(ports))
    for service in SERVICE_NAMES:
        env[f"{service.upper()}_GRPC_PORT"] = str(next(ports))
        env[f"{service.upper()}_HTTP_PORT"] = str(next(ports))
    env.update(extra)
    return env, gateway_port


def start_dev_up(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "dev", "up", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def healthz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def processes_using(path: Path) -> list[psutil.Process]:
    """Live processes naming ``path`` on their command line (PostgreSQL, nats-server)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(str(path) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@dataclass
class DevUp:
    """One `tally dev up` run whose output is read as it comes."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, data_dir: Path, env: dict[str, str]) -> DevUp:
        run = cls(start_dev_up(data_dir, env))
        run._reader = threading.Thread(target=run._read, daemon=True)
        run._reader.start()
        return run

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        """Until a line containing ``text`` was printed; fail if the launcher exits first."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from tally dev up:\n{self.output}")
            time.sleep(0.05)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def ensure_stopped(self) -> None:
        """A failed test must not leave a suite behind: ask, then insist."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)  # the second signal kills at once
                self.proc.wait(30)

    def wait_exit(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code


def gone_within(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Which of ``procs`` are still alive (not zombies) after ``timeout`` seconds."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    still = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                still.append(proc)
        except psutil.NoSuchProcess:
            continue
    return still
