"""The event loop a Tally process runs on: uvloop unless ``EVENT_LOOP=asyncio``.

uvloop (libuv) schedules callbacks, timers and socket reads in C. grpc.aio
runs on any asyncio loop, and on this suite's hot paths (unary calls of a
few hundred microseconds, batched ingestion) the loop's own bookkeeping is a
visible share of the CPU: a no-op grpc.aio server costs about a sixth less
per call on uvloop (docs/performance.md, round 4). ``asyncio`` stays
selectable so a loop-specific problem can be ruled out by configuration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopName = Literal["uvloop", "asyncio"]
DEFAULT_EVENT_LOOP: EventLoopName = "uvloop"


def loop_factory(
    name: EventLoopName = DEFAULT_EVENT_LOOP,
) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], name: EventLoopName = DEFAULT_EVENT_LOOP) -> T:
    """``asyncio.run`` on the named loop."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
