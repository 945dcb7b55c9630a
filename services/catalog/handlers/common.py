"""What every catalog use case shares: ids, pages, not-found errors."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.kit.errors import InvalidArgument
from services.kit.pagination import PageToken, page_size

T = TypeVar("T")

# AIP-158 says at most 500 for the catalog's lists (see the proto comments).
MAX_PAGE_SIZE = 500


def new_id(prefix: str) -> str:
    """Ids say what they name (``met_``, ``pkg_``, ``pkv_``, ``chg_``), which
    makes logs, events and support tickets readable."""
    return f"{prefix}_{uuid.uuid4().hex}"


def bounded_page_size(requested: int) -> int:
    return page_size(requested, maximum=MAX_PAGE_SIZE)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def after_key(token: PageToken | None, kind: type[T]) -> T | None:
    """The single sort key a catalog token carries; a forged shape is the caller's error."""
    if token is None:
        return None
    if len(token.after) != 1 or not isinstance(token.after[0], kind):
        raise InvalidArgument.field("page_token", "is not a token this API issued")
    value: T = token.after[0]
    return value
