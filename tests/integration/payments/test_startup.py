"""Payments without a provider key refuses to start with one clear line."""

from __future__ import annotations

import pytest

from services.kit import migrations
from services.kit.devstack import free_port
from tests.conftest import Infra
from tests.integration.test_startup_errors import assert_one_error_line, tally

pytestmark = pytest.mark.integration


def test_missing_stripe_api_key(database_url: str, infra: Infra) -> None:
    migrations.upgrade("payments", database_url)
    result = tally(
        "serve",
        "payments",
        env={
            "DATABASE_URL": database_url,
            "NATS_URL": infra.nats_url,
            "PAYMENTS_GRPC_PORT": str(free_port()),
            "PAYMENTS_HTTP_PORT": str(free_port()),
            "STRIPE_API_KEY": "",
            "PAYMENTS_STRIPE_API_KEY": "",
        },
    )
    assert_one_error_line(result, "STRIPE_API_KEY")
