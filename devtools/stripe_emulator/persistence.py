"""The account on disk: one JSON file, loaded at start and replaced after every change.

A real Stripe account outlives the processes that call it; ``make run`` keeps
payments' database across runs, so the emulator keeps its account beside it.
The file is replaced, never edited in place (a temporary file in the same
directory, fsynced, then ``os.replace``), so a stop at any moment leaves either
the old account or the new one on disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import TypeAdapter, ValidationError

from devtools.stripe_emulator.cards import TestCard
from devtools.stripe_emulator.idempotency import StoredResponse
from devtools.stripe_emulator.state import Account

FORMAT_VERSION: Final = 1


@dataclass(frozen=True)
class _File:
    version: Literal[1]
    objects: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    # Which test card each payment method was made from: what charging it does.
    cards: dict[str, TestCard]
    # Stored responses, bodies as the UTF-8 text they are, so a key replays byte for byte.
    idempotency: dict[str, StoredResponse]


_FORMAT = TypeAdapter(_File)


class StateFileError(Exception):
    """The state file cannot be read as an account; the message is one line naming it."""


@dataclass(frozen=True)
class Saved:
    account: Account
    idempotency: dict[str, StoredResponse]


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: bytes | None = None

    def load(self) -> Saved | None:
        """The saved account, or None when there is none yet (the first run)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc.strerror or str(exc)) from None
        try:
            saved = _FORMAT.validate_json(data)
        except ValidationError as exc:
            raise self._error(_first_problem(exc)) from None
        self._written = data
        return Saved(Account(saved.objects, saved.events, saved.cards), saved.idempotency)

    def save(self, account: Account, idempotency: dict[str, StoredResponse]) -> None:
        """Writes the account unless it is what the file already holds."""
        content = _File(FORMAT_VERSION, account.objects, account.events, account.cards, idempotency)
        data = _FORMAT.dump_json(content, indent=1)
        if data == self._written:
            return
        _replace(self.path, data)
        self._written = data

    def _error(self, reason: str) -> StateFileError:
        return StateFileError(
            f"cannot load the state file {self.path}: {reason}"
            " (move it away to start with an empty account)"
        )


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}".replace("\n", " ")


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
