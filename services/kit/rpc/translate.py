"""Driver errors that say what is wrong with the request or the moment, not the code.

A servicer that lets a database error escape would answer INTERNAL. Two kinds
of such errors are not bugs, and the caller deserves to know which:

* SQLSTATE class 22 (data exception): a value PostgreSQL refuses to store or
  compare, such as a NUL character in text or a number out of range. The
  request can never succeed as sent: INVALID_ARGUMENT.
* The database going away (class 08, 57P01-57P03, a dropped connection): safe
  to retry once it is back: UNAVAILABLE.

Everything else stays what it was, so a real bug still reads INTERNAL.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.kit.errors import InvalidArgument, Unavailable

_DATA_EXCEPTIONS = {
    "22001": "a text value is too long",
    "22003": "a number is out of range",
    "22007": "a date or time has the wrong form",
    "22008": "a date or time is out of range",
    "22021": "a text value contains a character that cannot be stored (such as NUL)",
    "22P02": "a value has the wrong form",
    "22P05": "a text value contains a character that cannot be stored (such as NUL)",
}
_GONE_STATES = ("57P01", "57P02", "57P03")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [
            current.__cause__,
            current.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else ""


def translate(exc: Exception) -> Exception:
    """The error kind ``exc`` stands for, or ``exc`` itself."""
    for link in _chain(exc):
        state = _sqlstate(link)
        if state.startswith("22"):
            description = _DATA_EXCEPTIONS.get(state, "a value cannot be stored")
            return InvalidArgument.field("(request)", description, reason="UNSTORABLE_VALUE")
        if state.startswith("08") or state in _GONE_STATES:
            return _unavailable()
        if getattr(link, "connection_invalidated", False) or isinstance(link, ConnectionError):
            return _unavailable()
    return exc


def _unavailable() -> Unavailable:
    return Unavailable(
        message="the database is not reachable; retry", reason="DATABASE_UNAVAILABLE"
    )
