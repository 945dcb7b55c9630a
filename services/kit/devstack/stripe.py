"""The local Stripe emulator (``devtools.stripe_emulator``) as a suite child process.

The suite runs it only when nobody gave a real ``STRIPE_API_KEY`` and the
payments service can be pointed at it, so ``make run`` and the end-to-end
tests drive the real Stripe SDK path offline.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from services.kit.devstack._process import child_env, log_summary, spawn, stop_child
from services.kit.devstack.errors import DevStackError

EMULATOR_MODULE = "devtools.stripe_emulator"
HOST = "127.0.0.1"


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _env_finding(module: str) -> dict[str, str]:
    """The child runs from "/": make sure it imports ``module`` from where we found it.

    An editable install made before ``devtools`` joined the packages does not
    map it, so the checkout it lives in goes on the child's path.
    """
    env = child_env()
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin:
        root = Path(spec.origin).resolve().parents[module.count(".") + 1]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def payments_takes_stripe_settings() -> bool:
    """Whether the payments service has a ``stripe_api_key`` setting to point at us."""
    if not _module_exists("services.payments.settings"):
        return False
    module = importlib.import_module("services.payments.settings")
    return any(
        "stripe_api_key" in getattr(cls, "model_fields", {})
        for _, cls in inspect.getmembers(module, inspect.isclass)
    )


def stripe_emulator_wanted(env: Mapping[str, str]) -> bool:
    if env.get("STRIPE_API_KEY") or env.get("PAYMENTS_STRIPE_API_KEY"):
        return False  # someone chose a real (test-mode) Stripe account
    return _module_exists(EMULATOR_MODULE) and payments_takes_stripe_settings()


class StripeEmulatorProcess:
    def __init__(
        self, port: int, *, webhook_url: str, log_dir: Path, state_file: Path | None = None
    ) -> None:
        from devtools.stripe_emulator import (
            DEFAULT_API_KEY,
            DEFAULT_PUBLISHABLE_KEY,
            DEFAULT_WEBHOOK_SECRET,
        )

        self.port = port
        self.webhook_url = webhook_url
        self.api_key: str = DEFAULT_API_KEY
        self.webhook_secret: str = DEFAULT_WEBHOOK_SECRET
        self.publishable_key: str = DEFAULT_PUBLISHABLE_KEY
        self.log_path = log_dir / "stripe.log"
        # Where the emulator keeps its account, so it outlives a restart as payments' data does.
        self.state_file = state_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def api_base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def payments_env(self) -> dict[str, str]:
        return {
            "STRIPE_API_KEY": self.api_key,
            "STRIPE_API_BASE": self.api_base,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "STRIPE_PUBLISHABLE_KEY": self.publishable_key,
        }

    def start(self, timeout: float = 15) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = spawn(
            [
                sys.executable,
                "-m",
                EMULATOR_MODULE,
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--webhook-url",
                self.webhook_url,
                "--webhook-secret",
                self.webhook_secret,
                "--api-key",
                self.api_key,
                *(["--state-file", str(self.state_file)] if self.state_file is not None else []),
            ],
            log_path=self.log_path,
            deathsig=signal.SIGTERM,
            env=_env_finding(EMULATOR_MODULE),
        )
        deadline = time.monotonic() + timeout
        while not self._accepts_tcp():
            if self._proc.poll() is not None:
                raise DevStackError(
                    f"stripe emulator exited with code {self._proc.returncode}:"
                    f" {log_summary(self.log_path)} (log: {self.log_path})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise DevStackError(f"stripe emulator not listening on {self.api_base}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self, timeout: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc, signal.SIGTERM, timeout)

    def _accepts_tcp(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1):
                return True
        except OSError:
            return False
