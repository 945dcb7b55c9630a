"""Every process runs on uvloop unless EVENT_LOOP says asyncio."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from pydantic import ValidationError

from services.kit import eventloop
from services.kit.settings import CommonSettings


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_the_default_loop_is_uvloop() -> None:
    assert issubclass(eventloop.run(_loop_type()), uvloop.Loop)


def test_asyncio_can_be_chosen() -> None:
    loop_type = eventloop.run(_loop_type(), "asyncio")
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_the_setting_reads_the_environment_and_refuses_other_loops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert CommonSettings().event_loop == "uvloop"
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert CommonSettings().event_loop == "asyncio"
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(ValidationError):
        CommonSettings()
