"""What every embedded server has in common: one child process on a data dir and a port."""

from __future__ import annotations

import pwd
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from services.kit.devstack._process import (
    describe_failure,
    log_size,
    log_summary,
    spawn,
    stop_child,
)
from services.kit.devstack.errors import DevStackError


class ChildServer(ABC):
    """A server this object runs as its own child, serving ``host:port`` from ``data_dir``.

    Subclasses say how to start it (``_start``) and how to tell it is ready
    (``_ready``); the lifecycle around both lives here.
    """

    # Prefixes every error and names the log file.
    _name: ClassVar[str]
    # Both the graceful stop and the parent-death signal: a server orphaned by
    # a killed launcher should shut down the same way a stopped one does.
    _shutdown_signal: ClassVar[signal.Signals]
    _poll_interval: ClassVar[float]

    def __init__(self, data_dir: Path, port: int, host: str, *, log_dir: Path | None) -> None:
        # Absolute, because the running-server checks compare it with the path
        # on a server's command line.
        self._data_dir = Path(data_dir).absolute()
        self._port = port
        self._host = host
        self._log_path = Path(log_dir or self._data_dir.parent).absolute() / f"{self._name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The server's pid while this object has it running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # The default timeouts differ per server, so each subclass sets its own
    # (and documents what start and stop mean for it).
    @abstractmethod
    def start(self, timeout: float = ...) -> None:
        """Start the server and wait until it is ready; a running one is left alone."""

    @abstractmethod
    def stop(self, timeout: float = ...) -> None:
        """Stop the server; safe to call repeatedly or before ``start``."""

    def __enter__(self) -> Self:
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
        return f"{type(self).__name__}({str(self._data_dir)!r}, port={self._port}, pid={self.pid})"

    # -- for subclasses ------------------------------------------------------

    @abstractmethod
    def _start(self, timeout: float) -> None:
        """Start a server that is not running yet, by way of ``_launch``."""

    def _start_child(self, timeout: float) -> None:
        try:
            if not self.is_running:
                self._start(timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            # Directory and file trouble (a path that is a file, a read-only
            # disk) still has to surface as the one-line error.
            raise DevStackError(f"{self._name}: {describe_failure(exc)}") from exc

    def _stop_child(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc, self._shutdown_signal, timeout)

    @abstractmethod
    def _ready(self) -> bool:
        """Whether the running server accepts clients yet."""

    def _already_running(self, pid: int) -> DevStackError:
        # Two servers on one data dir would corrupt each other's data.
        return DevStackError(
            f"{self._name}: a server (pid {pid}) is already running on {self._data_dir}"
        )

    def _launch(
        self,
        argv: Sequence[str],
        timeout: float,
        *,
        run_as: pwd.struct_passwd | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        since = log_size(self._log_path)
        try:
            self._proc = spawn(
                argv,
                log_path=self._log_path,
                run_as=run_as,
                deathsig=self._shutdown_signal,
                env=env,
            )
            self._wait_ready(timeout, since)
        except BaseException:
            self.stop()
            raise

    def _netloc(self, port: int) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{port}"

    def _accepts_tcp(self) -> bool:
        try:
            with socket.create_connection((self._host, self._port), timeout=1):
                return True
        except OSError:
            return False

    def _wait_ready(self, timeout: float, since: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                summary = log_summary(self._log_path, since)
                raise DevStackError(
                    f"{self._name} exited with code {code} while starting: {summary}"
                    f" (log: {self._log_path})"
                )
            if self._ready():
                return
            if time.monotonic() >= deadline:
                raise DevStackError(
                    f"{self._name} did not become ready on {self._host}:{self._port}"
                    f" within {timeout:g}s (log: {self._log_path})"
                )
            time.sleep(self._poll_interval)
