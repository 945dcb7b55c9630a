"""The production settings profile: flags off unless set, no dev secret, no keyless start."""

from __future__ import annotations

import pytest

from gateway.auth import TokenVerifier
from services.kit.errors import StartupError
from services.kit.settings import DEV_HS256_SECRET, GatewaySettings, load_settings

FLAGS = ("PORTAL_BILLING_ENABLED", "ADMIN_BILLING_ENABLED", "INTERNAL_BILLING_ENABLED")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the developer's shell exports must not decide these tests.
    for name in ("TALLY_PROFILE", "JWT_HS256_SECRET", "JWT_JWKS_FILE", "JWT_JWKS_URL", *FLAGS):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"GATEWAY_{name}", raising=False)


def test_dev_is_the_default_with_flags_on_and_the_dev_secret() -> None:
    settings = load_settings(GatewaySettings)
    assert settings.profile == "dev"
    assert settings.portal_billing_enabled
    assert settings.admin_billing_enabled
    assert settings.internal_billing_enabled
    assert settings.jwt_hs256_secret == DEV_HS256_SECRET
    TokenVerifier(settings)  # make run starts as before


def test_production_flags_default_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PROFILE", "production")
    settings = load_settings(GatewaySettings)
    assert settings.profile == "production"
    assert not settings.portal_billing_enabled
    assert not settings.admin_billing_enabled
    assert not settings.internal_billing_enabled


def test_production_flags_set_explicitly_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PROFILE", "production")
    monkeypatch.setenv("PORTAL_BILLING_ENABLED", "true")
    monkeypatch.setenv("GATEWAY_INTERNAL_BILLING_ENABLED", "true")
    settings = load_settings(GatewaySettings)
    assert settings.portal_billing_enabled
    assert not settings.admin_billing_enabled
    assert settings.internal_billing_enabled
    # Init arguments count as explicit too (tests, embedding).
    monkeypatch.delenv("PORTAL_BILLING_ENABLED")
    built = GatewaySettings(tally_profile="production", admin_billing_enabled=True)
    assert built.admin_billing_enabled and not built.portal_billing_enabled


def test_production_drops_the_dev_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PROFILE", "production")
    assert load_settings(GatewaySettings).jwt_hs256_secret is None
    monkeypatch.setenv("GATEWAY_JWT_HS256_SECRET", "a-real-production-secret")
    settings = load_settings(GatewaySettings)
    assert settings.jwt_hs256_secret == "a-real-production-secret"
    TokenVerifier(settings)  # an own secret is enough to start


def test_production_without_any_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PROFILE", "production")
    with pytest.raises(StartupError) as caught:
        TokenVerifier(load_settings(GatewaySettings))
    message = str(caught.value)
    assert "\n" not in message
    assert "TALLY_PROFILE=production" in message and "JWT_JWKS_URL" in message


def test_production_refuses_the_dev_secret_even_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PROFILE", "production")
    monkeypatch.setenv("JWT_HS256_SECRET", DEV_HS256_SECRET)
    with pytest.raises(StartupError, match="dev JWT secret"):
        TokenVerifier(load_settings(GatewaySettings))


def test_production_with_a_jwks_source_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PROFILE", "production")
    monkeypatch.setenv("GATEWAY_JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json")
    TokenVerifier(load_settings(GatewaySettings))  # nothing fetched at start


def test_create_app_refuses_production_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.app import create_app

    monkeypatch.setenv("TALLY_PROFILE", "production")
    with pytest.raises(StartupError):
        create_app(load_settings(GatewaySettings))


def test_bad_profile_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PROFILE", "prod")
    with pytest.raises(StartupError) as caught:
        load_settings(GatewaySettings)
    message = str(caught.value)
    assert "\n" not in message
    assert "TALLY_PROFILE" in message and "'dev' or 'production'" in message
