"""What `tally dev up` prints once the suite is up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from services.cli.dev import _banner
from services.kit.devstack.suite import Suite


def test_the_banner_names_the_gateway_routes_a_developer_opens_first() -> None:
    suite = SimpleNamespace(
        gateway_url="http://127.0.0.1:8080",
        console_url="http://127.0.0.1:8090",
        service_address=lambda service: f"127.0.0.1:{50051 + len(service)}",
        database_url="postgresql://postgres@127.0.0.1:5432/tally",
        nats=SimpleNamespace(url="nats://127.0.0.1:4222"),
        log_dir=".tally/logs",
    )
    banner = _banner(cast(Suite, suite), "6 orgs")
    assert "http://127.0.0.1:8080/portal/billing/v1/features" in banner
    assert "tally dev token --org org_demo --permission organization:billing" in banner
    assert "/healthz, /docs, /openapi.json" in banner
    assert "http://127.0.0.1:8090" in banner
