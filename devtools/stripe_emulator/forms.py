"""Stripe's bracket form encoding to nested values.

``metadata[k]=v``, ``types[]=a`` and ``items[0][x]=1`` become dicts and lists.

The official SDKs index arrays (``expand[0]=x``) while curl users write ``expand[]=x``;
both decode to a list. A mapping whose keys are all indices becomes a list too, except
``metadata``, whose keys are the caller's own strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_FREE_FORM = frozenset({"metadata"})


def _segments(key: str) -> list[str]:
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_SEGMENT.findall(key[len(head) :])]


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested dicts and lists from the (key, value) pairs of a form body or query string."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _segments(key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    decoded: dict[str, Any] = _listify(root, free_form=False)
    return decoded


def _listify(value: Any, *, free_form: bool) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v, free_form=k in _FREE_FORM and not free_form) for k, v in value.items()}
    if not free_form and items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items
