"""The package versions a process has read, kept for its lifetime.

A published version never changes (``upsert_version`` does nothing on
conflict), so a row read once answers every later close without a round trip.
Only rows read from the database enter, so a version not known yet is still
looked up (and refused) every time until its event arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Row

from services.kit.db import Database

# Far more versions than a catalog publishes; past it the cache starts over.
LIMIT = 4096


class VersionCache:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._rows: dict[str, Row[Any]] = {}

    def known(self, ids: Iterable[str]) -> dict[str, Row[Any]]:
        rows = self._rows
        return {i: rows[i] for i in ids if i in rows}

    def remember(self, rows: Iterable[Row[Any]]) -> None:
        for row in rows:
            if len(self._rows) >= self.limit:
                self._rows.clear()
            self._rows[row.package_version_id] = row


_caches: WeakKeyDictionary[Database, VersionCache] = WeakKeyDictionary()


def cache_for(database: Database) -> VersionCache:
    """One cache per database (a test process talks to several)."""
    cache = _caches.get(database)
    if cache is None:
        cache = _caches[database] = VersionCache()
    return cache
