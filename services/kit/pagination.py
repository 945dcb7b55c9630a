"""AIP-158 pagination: bounded page sizes and opaque, tamper-evident page tokens.

A token carries the last row's sort key and a fingerprint of the filters it was
issued for; using it with other filters is an INVALID_ARGUMENT, not a silently
wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(
    requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """0 means the default; larger than the maximum is clamped (AIP-158)."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def _fingerprint(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PageToken:
    """Where the next page starts: after ``after`` (the last key returned)."""

    after: list[Any]

    def encode(self, filters: Mapping[str, Any]) -> str:
        body = json.dumps({"a": self.after, "f": _fingerprint(filters)}, default=str)
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, filters: Mapping[str, Any]) -> PageToken | None:
        if not token:
            return None
        try:
            padded = token + "=" * (-len(token) % 4)
            body = json.loads(base64.urlsafe_b64decode(padded.encode()))
            after, fingerprint = body["a"], body["f"]
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument.field("page_token", "is not a token this API issued") from None
        if fingerprint != _fingerprint(filters):
            raise InvalidArgument.field(
                "page_token", "was issued for a different filter; start again without it"
            )
        if not isinstance(after, list):
            raise InvalidArgument.field("page_token", "is not a token this API issued")
        return cls(after=after)


def next_page_token(rows: list[Any], size: int, key: Any, filters: Mapping[str, Any]) -> str:
    """The token for the page after ``rows`` (fetched with ``limit size + 1``).

    Repositories fetch one row more than asked: its presence says another page
    exists. ``key(row)`` gives the sort key, a list of JSON-able values.
    """
    if len(rows) <= size:
        return ""
    return PageToken(after=list(key(rows[size - 1]))).encode(filters)
