"""CORS for a browser front end on another origin: off by default, then per origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from services.kit.errors import StartupError
from services.kit.settings import GatewaySettings, load_settings
from tests.support.gateway import gateway_settings

FRONT_END = "https://app.example.com"
ROUTE = "/portal/billing/v1/subscriptions"


@asynccontextmanager
async def client(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: CORS answers before any route, and the routes used here
    # answer before calling a service.
    app = create_app(gateway_settings(**settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield http


def preflight(origin: str, headers: str = "authorization, content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": headers,
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_off_by_default_no_cors_headers_at_all() -> None:
    assert GatewaySettings().cors_origins() == ()
    async with client() as http:
        answer = await http.options(ROUTE, headers=preflight(FRONT_END))
        assert cors_headers(answer) == {}
        assert answer.status_code == 405  # no CORS layer: OPTIONS is just not a route's verb
        read = await http.get(ROUTE, headers={"Origin": FRONT_END})
        assert read.status_code == 401
        assert cors_headers(read) == {}


async def test_a_preflight_from_an_allowed_origin_gets_the_headers() -> None:
    origins = f"http://localhost:5173, {FRONT_END}"
    async with client(cors_allowed_origins=origins, cors_max_age_seconds=120) as http:
        answer = await http.options(
            ROUTE, headers=preflight(FRONT_END, "authorization, content-type, x-request-id")
        )
    assert answer.status_code == 200
    headers = cors_headers(answer)
    assert headers["access-control-allow-origin"] == FRONT_END
    assert "PATCH" in headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    assert headers["access-control-max-age"] == "120"
    assert "access-control-allow-credentials" not in headers
    assert answer.headers["x-request-id"]  # preflights are logged and traced like the rest


async def test_an_answer_to_an_allowed_origin_is_readable_errors_included() -> None:
    async with client(cors_allowed_origins=FRONT_END, cors_allow_credentials=True) as http:
        answer = await http.get(ROUTE, headers={"Origin": FRONT_END})
    # A 401 problem too: the front end must be able to read why.
    assert answer.status_code == 401
    headers = cors_headers(answer)
    assert headers["access-control-allow-origin"] == FRONT_END
    assert headers["access-control-allow-credentials"] == "true"
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "retry-after", "www-authenticate"} <= exposed
    assert "origin" in answer.headers["vary"].lower()


async def test_a_disallowed_origin_gets_no_allow_origin() -> None:
    async with client(cors_allowed_origins=FRONT_END) as http:
        answer = await http.options(ROUTE, headers=preflight("https://evil.example"))
        read = await http.get(ROUTE, headers={"Origin": "https://evil.example"})
        api_key = await http.options(ROUTE, headers=preflight(FRONT_END, "x-api-key"))
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    # Starlette still lists the exposed headers; without Allow-Origin the browser
    # hands the page nothing of the answer.
    assert "access-control-allow-origin" not in read.headers
    assert "access-control-allow-credentials" not in read.headers
    # The internal static key is not a header browsers may send.
    assert api_key.status_code == 400


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CORS_ALLOWED_ORIGINS", f"{FRONT_END},http://localhost:5173")
    monkeypatch.setenv("GATEWAY_CORS_ALLOW_CREDENTIALS", "true")
    settings = load_settings(GatewaySettings)
    assert settings.cors_origins() == (FRONT_END, "http://localhost:5173")
    assert settings.cors_allow_credentials


@pytest.mark.parametrize(
    "env",
    [
        {"GATEWAY_CORS_ALLOWED_ORIGINS": "https://app.example.com/portal"},
        {"GATEWAY_CORS_ALLOWED_ORIGINS": "app.example.com"},
        {"GATEWAY_CORS_ALLOWED_ORIGINS": "*", "GATEWAY_CORS_ALLOW_CREDENTIALS": "true"},
    ],
)
def test_a_bad_setting_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StartupError, match=r"(?i)cors"):
        load_settings(GatewaySettings)
