"""The console app in-process over a mock gateway (an httpx MockTransport
answering as the real gateway does), for tests/unit/console; tests/browser
drives it against the suite."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from console.app import create_app
from console.settings import ConsoleSettings

GatewayHandler = Callable[[httpx.Request], httpx.Response]


def production_settings(**values: object) -> ConsoleSettings:
    """The production profile (no dev sign-in; the host app forwards the bearer)."""
    base: dict[str, object] = {"tally_profile": "production", "session_secret": "s" * 40}
    return ConsoleSettings(**{**base, **values})  # type: ignore[arg-type]


def form_value(html: str, name: str) -> str:
    """The value of the form input named ``name`` (the CSRF token, a request id, ...)."""
    found = re.search(rf'name="{re.escape(name)}"[^>]*? value="([^"]*)"', html)
    assert found, name
    return found.group(1)


def console_client(
    handler: GatewayHandler,
    settings: ConsoleSettings | None = None,
    base_url: str = "http://console.test",
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """A client of the console app whose gateway is ``handler``."""
    app = create_app(settings or ConsoleSettings(), transport=httpx.MockTransport(handler))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url, headers=headers
    )
