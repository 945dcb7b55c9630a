"""CONSUMER_CONCURRENCY: what the period-close consumers may apply at once."""

from __future__ import annotations

import pytest

from services.kit.settings import load_settings, settings_class_for


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONSUMER_CONCURRENCY", "DB_POOL_SIZE", "INVOICING_DB_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_concurrency_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMER_CONCURRENCY", "3")
    assert load_settings(settings_class_for("invoicing")).consumer_concurrency == 3


def test_concurrency_never_exceeds_the_connection_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each message in flight holds a pooled connection for its transaction.
    monkeypatch.setenv("CONSUMER_CONCURRENCY", "16")
    monkeypatch.setenv("INVOICING_DB_POOL_SIZE", "4")
    assert load_settings(settings_class_for("invoicing")).consumer_concurrency == 4
    assert load_settings(settings_class_for("usage")).consumer_concurrency == 10
