"""Fixtures of the console's in-process tests (tests/support/console_app.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.support.console_app import console_client

MakeConsole = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_console() -> AsyncIterator[MakeConsole]:
    """``make_console(handler, settings=None, base_url=..., headers=None)`` makes
    :func:`console_client` clients and closes every one after the test."""
    made: list[httpx.AsyncClient] = []

    def make(*args: object, **kwargs: object) -> httpx.AsyncClient:
        made.append(console_client(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for client in made:
        await client.aclose()
