from __future__ import annotations

import pytest

from services.kit.errors import StartupError
from services.kit.settings import (
    DEFAULT_GRPC_PORTS,
    GatewaySettings,
    load_settings,
    settings_class_for,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "NATS_URL", "GRPC_PORT", "USAGE_GRPC_PORT", "USAGE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_each_service_defaults_to_its_documented_port_and_schema() -> None:
    for service, port in DEFAULT_GRPC_PORTS.items():
        settings = load_settings(settings_class_for(service))
        assert settings.grpc_port == port
        assert settings.db_schema == service


def test_prefixed_variable_wins_over_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://shared@db/tally")
    monkeypatch.setenv("USAGE_DATABASE_URL", "postgresql://usage@db/usage")
    usage = load_settings(settings_class_for("usage"))
    catalog = load_settings(settings_class_for("catalog"))
    assert usage.sqlalchemy_url == "postgresql+asyncpg://usage@db/usage"
    assert catalog.sqlalchemy_url == "postgresql+asyncpg://shared@db/tally"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_PORT", "")
    assert load_settings(settings_class_for("usage")).grpc_port == DEFAULT_GRPC_PORTS["usage"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NATS_URL", "localhost:4222", "CATALOG_NATS_URL or NATS_URL"),
        ("DATABASE_URL", "mysql://x@y/z", "CATALOG_DATABASE_URL or DATABASE_URL"),
        ("GRPC_PORT", "eighty", "CATALOG_GRPC_PORT or GRPC_PORT"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(StartupError) as caught:
        load_settings(settings_class_for("catalog"))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        settings_class_for("ledger")


def test_gateway_knows_every_service_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_USAGE_ADDR", "usage:50053")
    addresses = load_settings(GatewaySettings).service_addresses()
    assert addresses["usage"] == "usage:50053"
    assert addresses["catalog"] == f"127.0.0.1:{DEFAULT_GRPC_PORTS['catalog']}"
