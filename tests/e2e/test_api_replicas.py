"""An API-only replica beside a service: it serves, and the gateway spreads calls over both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.kit.devstack.suite import Suite
from tests.support.e2e import running_suite
from tests.support.gateway import service_headers
from tests.support.metrics import scrape, value

pytestmark = pytest.mark.e2e

CALLS = 40
CHECKS = "rpc_server_duration_milliseconds_count"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(
        Path(tmp_path_factory.mktemp("replicas")), api_replicas={"subscriptions": 1}
    ) as running:
        yield running


async def checks_served(http_url: str) -> float:
    samples = await scrape(http_url)
    return value(samples, CHECKS, service="subscriptions", rpc_method="CheckEntitlement")


async def test_the_replica_serves_and_runs_no_background_work(suite: Suite) -> None:
    ((grpc_port, _http_port),) = suite.replica_ports["subscriptions"]
    assert suite.service_addresses("subscriptions")[1] == f"127.0.0.1:{grpc_port}"
    assert suite.grpc_health_at(f"127.0.0.1:{grpc_port}") == "SERVING"
    assert suite.processes["subscriptions-2"].poll() is None
    log = (suite.log_dir / "subscriptions-2.log").read_text()
    assert "(worker off)" in log, log[-2000:]


async def test_the_gateway_spreads_calls_over_every_process(suite: Suite) -> None:
    ((_grpc_port, replica_http),) = suite.replica_ports["subscriptions"]
    urls = [suite.service_http_url("subscriptions"), f"http://127.0.0.1:{replica_http}"]
    before = [await checks_served(url) for url in urls]
    async with httpx.AsyncClient(base_url=suite.gateway_url, timeout=30) as client:
        for i in range(CALLS):
            r = await client.post(
                "/internal/billing/v1/entitlements:check",
                json={"orgId": f"org-replicas-{i}", "featureKey": "api_calls", "quantity": "1"},
                headers=service_headers(),
            )
            assert r.status_code == 200, r.text
    served = [await checks_served(url) - b for url, b in zip(urls, before, strict=True)]
    assert sum(served) == CALLS
    # Round robin: each process takes about half, never none.
    assert min(served) >= CALLS // 4, served
