"""One seeded suite (console included) per test process, one chromium per module.

Every browser test module shares the suite (it takes ~35 s to start and
seed), so a test must not rely on what another module's tests change: each
module works on orgs of its own (see the module docstrings). Chromium is
closed after each module, with a fresh page per test: Playwright's sync API
runs an event loop of its own in this thread while it is open, and the
asyncio tests that may follow on the same worker cannot start theirs beside
it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.console import World, chromium, seeded_suite


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with seeded_suite(Path(tmp_path_factory.mktemp("console-suite"))) as world:
        yield world


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # A context per test: its own cookies, so each test signs in as it needs.
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
