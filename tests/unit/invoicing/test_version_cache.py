"""The per-process cache of published package versions: it answers only what
it was given, and starts over past its limit rather than growing."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from services.invoicing.repository.versions import VersionCache, cache_for
from services.kit.db import Database

VersionRow = namedtuple("VersionRow", ["package_version_id", "name"])


def rows(*ids: str) -> list[Any]:
    return [VersionRow(i, f"v {i}") for i in ids]


def test_answers_only_what_it_was_given() -> None:
    cache = VersionCache()
    assert cache.known({"a", "b"}) == {}
    cache.remember(rows("a"))
    assert cache.known({"a", "b"}) == {"a": VersionRow("a", "v a")}


def test_starts_over_past_its_limit() -> None:
    cache = VersionCache(limit=2)
    cache.remember(rows("a", "b"))
    cache.remember(rows("c"))
    assert cache.known({"a", "b", "c"}) == {"c": VersionRow("c", "v c")}


def test_one_cache_per_database() -> None:
    first = Database("postgresql://localhost/one", "invoicing")
    second = Database("postgresql://localhost/two", "invoicing")
    cache_for(first).remember(rows("a"))
    assert cache_for(first).known({"a"}) == {"a": VersionRow("a", "v a")}
    assert cache_for(second).known({"a"}) == {}
