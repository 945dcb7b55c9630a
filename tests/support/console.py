"""The console in a real browser: the suite as ``make run`` starts it, seeded, plus chromium.

Playwright drives Debian's chromium (``/usr/bin/chromium``, installed by
``make chromium``); Playwright's own browser download cannot work offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from services.cli.seed import ORGS, Seeded, seed
from services.kit.devstack.suite import Suite
from services.kit.settings import SERVICE_NAMES
from tests.support.e2e import running_suite
from tests.support.gateway import token

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class World:
    suite: Suite
    seeded: Seeded

    @property
    def console_url(self) -> str:
        return self.suite.console_url

    def gateway(
        self,
        method: str,
        path: str,
        auth: str,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        sent = {**(headers or {}), "Authorization": f"Bearer {auth}"}
        with httpx.Client(base_url=self.suite.gateway_url, timeout=10) as http:
            return http.request(method, path, headers=sent, **kwargs)

    def invoices(self, org: str, state: str | None = None) -> list[dict[str, Any]]:
        params = {"pageSize": "100", "omitLines": "true"}
        if state:
            params["state"] = state
        reply = self.gateway(
            "GET",
            f"/super-admin/billing/v1/orgs/{org}/invoices",
            token(roles=["billing_admin"]),
            params=params,
        )
        assert reply.status_code == 200, reply.text
        invoices: list[dict[str, Any]] = reply.json().get("invoices", [])
        return invoices


# Portal billing is open to a cohort, as a rollout has it: every demo org and
# the browser tests' own, but not OUTSIDE_ORG (tests/browser/test_pay_and_flags.py).
PAYER_ORG = "org_ui_payer"
OUTSIDE_ORG = "org_ui_outside"
COHORT_ENV = {
    "GATEWAY_ORG_TAGS": "billing:" + ",".join([*(o.org_id for o in ORGS), PAYER_ORG]),
    "GATEWAY_PORTAL_BILLING_ENABLED": "tags:billing",
}


@contextmanager
def seeded_suite(root: Path) -> Iterator[World]:
    """The suite of processes (console included) with the demo data of ``tally dev up``."""
    with running_suite(root, **COHORT_ENV) as suite:
        yield World(suite, run_seed(suite))


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def sign_in(page: Page, console_url: str, org: str, role: str) -> None:
    """The dev sign-in page, as a person uses it."""
    page.goto(f"{console_url}/sign-in")
    page.select_option("#org_id", org)
    page.select_option("#role", role)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def addresses(suite: Suite) -> dict[str, str]:
    return {s: suite.service_address(s) for s in SERVICE_NAMES}


def run_seed(suite: Suite) -> Seeded:
    return asyncio.run(seed(addresses(suite)))
