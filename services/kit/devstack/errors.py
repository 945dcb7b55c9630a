"""The one error type of the embedded dev stack."""

from __future__ import annotations


class DevStackError(Exception):
    """A dev stack component could not be started or stopped.

    The message is always a single human-readable line: ``tally dev up`` and the
    test fixtures print it as the one error line instead of a traceback, so
    whoever raises it condenses logs and OS errors into that line.
    """
