"""Cancellation that sticks, for background loops that catch broad exceptions.

On Python 3.11 ``asyncio.wait_for`` (used inside nats-py's ``fetch``) can turn a
cancellation that races its timeout into a plain ``TimeoutError``. A loop that
catches that and goes round again would never stop, and a service's shutdown
would wait for it forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that an inner ``wait_for`` swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]], timeout: float) -> list[str]:
    """Cancel ``tasks`` and wait at most ``timeout``; returns the names still running."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return []
    _, still_running = await asyncio.wait(pending, timeout=timeout)
    return sorted(t.get_name() for t in still_running)
