"""Argument handling shared by every `tally` command: instants and one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn


def parse_instant(text: str) -> datetime:
    """ISO 8601 with an offset or Z, as UTC; a naive instant would be ambiguous."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} needs a timezone (Z or +00:00)")
    return value.astimezone(UTC)


def instant(text: str) -> datetime:
    """:func:`parse_instant` as an argparse ``type``."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        if "timezone" in str(exc):
            raise argparse.ArgumentTypeError(str(exc)) from None
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 instant (e.g. 2026-12-01T00:00:00Z)"
        ) from None


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end like every other CLI failure of the suite: one
    ``tally: error: ...`` line and exit status 1 (argparse would print the
    usage and exit 2), so scripts need to handle only one failure shape."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # Leftovers would reach the top-level `tally` parser, which reports
        # them its own way (usage, exit 2): refuse them here instead.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        print(f"tally: error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(1)
