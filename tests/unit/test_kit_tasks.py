"""Background loops stop on cancellation even when a timeout swallows it."""

from __future__ import annotations

import asyncio

from services.kit.tasks import cancel_and_wait, raise_if_cancelling


async def _loop_that_sees_cancellation_as_timeout(check: bool, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            # What Python 3.11's wait_for can hand a caller: the cancel as a timeout.
            try:
                raise TimeoutError from None
            except TimeoutError:
                if check:
                    raise_if_cancelling()


async def test_a_loop_that_checks_stops_when_cancelled() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(_loop_that_sees_cancellation_as_timeout(True, stop), name="checks")
    await asyncio.sleep(0.03)
    assert await cancel_and_wait([task], timeout=2) == []
    assert task.cancelled()


async def test_a_loop_that_does_not_check_is_reported_not_awaited_forever() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(
        _loop_that_sees_cancellation_as_timeout(False, stop), name="stubborn"
    )
    await asyncio.sleep(0.03)
    assert await cancel_and_wait([task], timeout=0.2) == ["stubborn"]
    stop.set()
    await task
