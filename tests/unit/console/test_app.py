"""The console app in-process: sessions, CSRF, profiles and error pages.

The gateway is an httpx MockTransport here, answering as the real one does;
tests/browser drives the console against the real suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import ValidationError

from console.settings import ConsoleSettings
from tests.support.gateway import token
from tests.unit.console.conftest import MakeConsole

GatewayHandler = Callable[[httpx.Request], httpx.Response]
CUSTOMER = token(org="org_demo", permissions=["organization:billing"])


def settings(**values: object) -> ConsoleSettings:
    return ConsoleSettings(**values)  # type: ignore[arg-type]


def features(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/portal/billing/v1/features":
        return httpx.Response(200, json={"features": {"portal": True}})
    return httpx.Response(404, json={"status": 404})


@pytest.fixture
def client_for(make_console: MakeConsole) -> Callable[..., httpx.AsyncClient]:
    def make(handler: GatewayHandler = features, **values: object) -> httpx.AsyncClient:
        return make_console(handler, settings(**values))

    return make


async def test_sign_in_needs_the_sessions_csrf_token(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    client = client_for()
    page = await client.get("/sign-in")
    assert page.status_code == 200
    refused = await client.post(
        "/sign-in", data={"org_id": "org_demo", "role": "customer", "csrf_token": "forged"}
    )
    assert refused.status_code == 403 and "form has expired" in refused.text
    assert (
        "tally_console" not in refused.headers.get("set-cookie", "") or "token" not in refused.text
    )
    csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    signed = await client.post(
        "/sign-in", data={"org_id": "org_demo", "role": "customer", "csrf_token": csrf}
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


async def test_an_unknown_org_is_refused_next_to_its_field(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    client = client_for()
    page = await client.get("/sign-in")
    csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    answer = await client.post(
        "/sign-in", data={"org_id": "org_nobody", "role": "customer", "csrf_token": csrf}
    )
    assert answer.status_code == 400
    assert 'data-field="org_id"' in answer.text


async def test_production_has_no_dev_sign_in_and_reads_the_forwarded_bearer(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    seen: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        assert request.headers["x-request-id"]
        if request.url.path.endswith("/invoices"):
            return httpx.Response(200, json={"invoices": []})
        return features(request)

    client = client_for(gateway, tally_profile="production", session_secret="s" * 40)
    assert (await client.get("/sign-in")).status_code == 404
    assert (await client.get("/portal/invoices")).status_code == 401
    listed = await client.get("/portal/invoices", headers={"Authorization": f"Bearer {CUSTOMER}"})
    assert listed.status_code == 200 and "No invoices yet" in listed.text
    assert seen and set(seen) == {f"Bearer {CUSTOMER}"}


def test_production_refuses_the_dev_session_secret() -> None:
    with pytest.raises(ValidationError, match="CONSOLE_SESSION_SECRET"):
        settings(tally_profile="production")
    assert settings(tally_profile="production", session_secret="x" * 40).session_https_only


async def test_a_customer_without_the_permission_gets_the_403_page(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    client = client_for(tally_profile="production", session_secret="s" * 40)
    other = token(org="org_demo", permissions=["organization:read"])
    page = await client.get("/portal", headers={"Authorization": f"Bearer {other}"})
    assert page.status_code == 403
    assert "organization:billing" in page.text and "Traceback" not in page.text


async def test_gateway_violations_are_shown_next_to_the_field(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    invoice = {
        "invoiceId": "inv_1",
        "orgId": "org_<b>x</b>",
        "state": "INVOICE_STATE_FINALIZED",
        "currencyCode": "USD",
        "total": {"currencyCode": "USD", "amountMinor": "1000"},
    }

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            assert body["lines"][0]["amount"] == {"currencyCode": "USD", "amountMinor": "1250"}
            return httpx.Response(
                400,
                headers={"content-type": "application/problem+json"},
                json={
                    "status": 400,
                    "title": "Bad Request",
                    "detail": "invalid request",
                    "violations": [
                        {
                            "field": "lines[0].amount",
                            "description": "more than the line's remaining",
                        }
                    ],
                },
            )
        return httpx.Response(200, json={"invoice": invoice})

    admin = token(roles=["billing_admin"])
    # Plain http in the test: the Secure cookie production defaults to would not come back.
    client = client_for(
        gateway, tally_profile="production", session_secret="s" * 40, session_https_only=False
    )
    headers = {"Authorization": f"Bearer {admin}"}
    form = await client.get("/admin/invoices/inv_1/credit-memo", headers=headers)
    assert "org_&lt;b&gt;x&lt;/b&gt;" in form.text  # autoescaped
    csrf = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    answer = await client.post(
        "/admin/invoices/inv_1/credit-memo",
        headers=headers,
        data={"csrf_token": csrf, "request_id": "r-1", "lines[0].amount": "12.50"},
    )
    assert answer.status_code == 400
    error = answer.text.split('data-field="lines[0].amount"')[1]
    assert error.startswith(">more than the line&#39;s remaining<")
    # A request id the form carried is sent again, so a retry is a replay.
    assert 'name="request_id" value="r-1"' in answer.text


async def test_a_gateway_that_does_not_answer_is_the_banner(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = client_for(down, tally_profile="production", session_secret="s" * 40)
    page = await client.get("/portal", headers={"Authorization": f"Bearer {CUSTOMER}"})
    assert page.status_code == 503
    assert "Billing is unavailable right now; try again in a minute." in page.text
