"""Child-process plumbing shared by the embedded servers.

Every server is our direct child (never a daemon) so the launcher owns its
lifetime: it runs in its own session, so a Ctrl-C in the terminal reaches only
the launcher, which then stops children in order; and it carries a
parent-death signal, so a launcher killed with SIGKILL still takes it down.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

_PR_SET_PDEATHSIG = 1

# Loaded in the parent: a forked child should make as few calls as possible
# before exec, and dlopen is not one to make there.
_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    _prctl = ctypes.CDLL(None, use_errno=True).prctl

_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def preexec(run_as: pwd.struct_passwd | None, deathsig: signal.Signals) -> Callable[[], None]:
    """Build the function the forked child runs just before exec.

    The kernel clears the parent-death signal whenever the credentials change,
    so the uid switch happens here, before prctl, rather than through Popen's
    ``user=`` (CPython happens to switch before preexec_fn today, but nothing
    documents that order; a test covers the outcome).
    """
    parent_pid = os.getpid()

    def _in_child() -> None:
        if run_as is not None:
            os.setgid(run_as.pw_gid)
            os.setgroups([])
            os.setuid(run_as.pw_uid)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(int(deathsig)), 0, 0, 0)
            # The launcher may have died between fork and prctl; the signal
            # would then never come, so leave instead of becoming an orphan.
            if os.getppid() != parent_pid:
                os._exit(1)

    return _in_child


def child_env() -> dict[str, str]:
    # The caller's PG* variables (PGHOST, PGOPTIONS, PGSSLMODE...) would
    # silently redirect or reconfigure the bundled tools and server.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _popen(
    argv: Sequence[str],
    log_path: Path,
    run_as: pwd.struct_passwd | None,
    deathsig: signal.Signals,
    env: Mapping[str, str],
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # "/" is readable by the unprivileged server user; the caller's
            # cwd (often /root) is not, and some tools complain about that.
            cwd="/",
            env=dict(env),
            start_new_session=True,
            preexec_fn=preexec(run_as, deathsig),
        )


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    deathsig: signal.Signals,
    run_as: pwd.struct_passwd | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived server child writing stdout and stderr to ``log_path``.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
    the process. A launcher that starts servers from worker threads (say,
    postgres and NATS in parallel) would see them killed as soon as those
    threads finish, so forks from any thread but the main one go through one
    spawner thread that lives as long as the interpreter.
    """
    args = (argv, log_path, run_as, deathsig, child_env() if env is None else env)
    if threading.current_thread() is threading.main_thread():
        return _popen(*args)
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack-spawner")
        executor = _spawner
    return executor.submit(_popen, *args).result()


def stop_child(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Ask ``proc`` to exit with ``sig``; SIGKILL it if it has not after ``timeout``."""
    stop_children([proc], sig, timeout)


def stop_children(
    procs: Sequence[subprocess.Popen[bytes]], sig: signal.Signals, timeout: float
) -> None:
    """Signal every one of ``procs`` at once, then wait for all, SIGKILLing laggards.

    Together, not one after another: each drains its in-flight work within
    its own grace period, so stopping n of them takes one grace, not n.
    """
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Postgres ("2026-01-02 03:04:05.678 UTC [42] ") and nats-server
# ("[42] 2026/01/02 03:04:05.678901 ") line prefixes: noise in a one-line error.
_PREFIX = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \S+ \[\d+\] "
    r"|\[\d+\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d(\.\d+)? )"
)
_FAILURE = re.compile(r"\b(FATAL|PANIC|ERROR):|\[(FTL|ERR)\]|\b(error|fatal)\b", re.IGNORECASE)
# Postgres logs the cause of a FATAL as a LOG or WARNING line just before it
# ("unrecognized configuration parameter ...") and advice just after it.
_CAUSE = re.compile(r"^(LOG|WARNING):|^\[WRN\]")
_ADVICE = re.compile(r"^(HINT|DETAIL):")


def log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def log_summary(log_path: Path, since: int = 0, max_chars: int = 400) -> str:
    """The failure logged after offset ``since``, with its cause, as one line.

    Logs are appended across runs, so ``since`` (the size before this run)
    keeps an old run's errors from being blamed for this one.
    """
    try:
        with log_path.open("rb") as f:
            f.seek(max(since, log_size(log_path) - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return "no log output"
    lines = [_PREFIX.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return "no log output"
    failures = [i for i, ln in enumerate(lines) if _FAILURE.search(ln)]
    if failures:
        first = last = failures[-1]
        if first > 0 and _CAUSE.match(lines[first - 1]):
            first -= 1
        while last + 1 < len(lines) and _ADVICE.match(lines[last + 1]):
            last += 1
        picked = lines[first : last + 1]
    else:
        picked = lines[-2:]
    summary = " | ".join(picked)
    return summary if len(summary) <= max_chars else "..." + summary[-max_chars:]


def describe_failure(exc: OSError | subprocess.SubprocessError) -> str:
    """An OS or spawn failure as a short phrase: "Not a directory: /path"."""
    if not isinstance(exc, OSError):
        return str(exc).replace("\n", " ")
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def find_server(exe_name: str, marker: Path) -> psutil.Process | None:
    """A running ``exe_name`` process whose command line or cwd is ``marker``.

    Used to refuse a second server on the same data directory; cwd matters for
    postgres, which chdirs into its data directory whatever path it was given.
    """
    needle = str(marker)
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] != exe_name or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if needle in (proc.info["cmdline"] or []) or proc.cwd() == needle:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def process_uses(pid: int, exe_name: str, marker: Path) -> bool:
    """Whether ``pid`` is a live ``exe_name`` serving ``marker`` (not a recycled pid)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != exe_name:
            return False
        return str(marker) in proc.cmdline() or proc.cwd() == str(marker)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # AccessDenied means another user's process, while a server on this
        # data dir runs as its owner: us, or the server user root switches to.
        return False
