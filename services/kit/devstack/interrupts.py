"""How a launcher of child processes takes SIGINT and SIGTERM.

A launcher (``tally dev up``, ``make bench``, the e2e suite helper) spends
its life in blocking calls: starting PostgreSQL, migrating, waiting for
health, seeding through gRPC, sleeping while it serves. A signal handler that
only sets a ``threading.Event`` reaches none of them, and one that takes a
lock can deadlock against the code it interrupted. So:

- the first signal raises :class:`Interrupted` in the main thread, the way
  Python's own SIGINT raises ``KeyboardInterrupt`` (a subclass of it, so
  asyncio lets it through every task at once), and the launcher's ``finally``
  stops its children in order; inside :meth:`Interrupts.run` the running
  task is cancelled instead, through the loop's own signal handling, so no
  exception lands in a task nobody awaits;
- a signal after that, or any signal while the launcher is already stopping,
  SIGKILLs every child's process group and exits at once, as a user who
  presses Ctrl-C twice expects. The handler takes no lock and writes with
  ``os.write``, so it cannot block on the code it interrupted.

The exit status is ``128 + signal``: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_Handler = Callable[[int, FrameType | None], Any] | int | None


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the launcher: stop what it started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class Interrupts:
    """Install with ``with Interrupts(child_pids) as interrupts:`` in the main thread.

    ``child_pids`` answers, at the moment of a hard stop, the pids of the
    children to kill; each is a process-group leader (``_process.spawn``
    starts them in their own session), so its own children go with it.
    """

    def __init__(self, child_pids: Callable[[], Iterable[int]]) -> None:
        self._child_pids = child_pids
        self._previous: dict[int, _Handler] = {}
        self._stopping = False
        self.signum: int | None = None

    def __enter__(self) -> Interrupts:
        if not self.available():
            return self  # a worker thread: signals stay with whoever owns the main one
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
        self._install()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    @staticmethod
    def available() -> bool:
        """Signal handlers can only be set from the main thread."""
        return threading.current_thread() is threading.main_thread()

    def _install(self) -> None:
        if not self.available():
            return
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None and not self._stopping:
            self.signum = signum
            raise Interrupted(signum)
        self.kill_now(signum)

    @contextmanager
    def stopping(self) -> Iterator[None]:
        """While the launcher stops its children, any signal means "now"."""
        self._stopping = True
        try:
            yield
        finally:
            self._stopping = False

    def kill_now(self, signum: int) -> None:
        """SIGKILL every child's process group and leave without cleanup."""
        os.write(2, b"\nsecond signal: killing every process at once\n")
        for pid in self._child_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
        os._exit(128 + (self.signum or signum))

    def run(
        self,
        main: Coroutine[Any, Any, T],
        runner: Callable[[Coroutine[Any, Any, T]], T] = asyncio.run,
    ) -> T:
        """Run ``main`` on a loop of ``runner``; the first signal cancels it.

        Raises :class:`Interrupted` once the cancelled coroutine has unwound.
        """
        return runner(self._cancel_on_signal(main))

    async def _cancel_on_signal(self, main: Coroutine[Any, Any, T]) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(main)

        def on_signal(signum: int) -> None:
            if self.signum is None and not self._stopping:
                self.signum = signum
                task.cancel()
            else:
                self.kill_now(signum)

        if not self.available():
            return await task
        for sig in SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await task
        except asyncio.CancelledError:
            if self.signum is not None:
                raise Interrupted(self.signum) from None
            raise
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
            # Removing them put back the defaults (SIGTERM would kill the
            # launcher outright while the loop winds down).
            self._install()
