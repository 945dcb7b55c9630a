"""``tally status`` describes a running suite: health, backlogs, consumers,
the billing clock, the last payment sync and invoices by state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from tally.invoicing.v1 import invoicing_pb2, invoicing_pb2_grpc
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from services.cli import status as status_cli
from services.cli.main import main
from services.kit.devstack import free_port
from services.kit.protoconv import to_timestamp
from tests.integration.test_catalog_subscriptions_usage import eventually
from tests.support.suite import TIMEOUT, Suite, billing_suite, subscribed_org

pytestmark = pytest.mark.integration

SYNCED_AT = datetime(2026, 11, 29, 6, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
async def suite(database_url: str, nats_url: str) -> AsyncIterator[Suite]:
    async with billing_suite(database_url, nats_url) as suite:
        yield suite


@pytest.fixture
def environment(
    suite: Suite, database_url: str, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ops export on a compose host: addresses, DATABASE_URL, NATS_URL."""
    for service in suite.runtimes:
        monkeypatch.setenv(f"{service.upper()}_ADDR", suite.address(service))
    monkeypatch.setenv("PAYMENTS_ADDR", f"127.0.0.1:{free_port()}")  # not running
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("NATS_URL", nats_url)


async def _payments_synced(database_url: str) -> None:
    """The one payments table status reads, as payments' migration creates it."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS payments;"
            " CREATE TABLE IF NOT EXISTS payments.sync_state"
            " (name text PRIMARY KEY, cursor_time timestamptz NOT NULL,"
            "  update_time timestamptz NOT NULL)"
        )
        await conn.execute(
            "INSERT INTO payments.sync_state VALUES ('stripe_payments', $1, $1)", SYNCED_AT
        )
    finally:
        await conn.close()


async def test_status_before_and_after_a_billing_run(
    suite: Suite, environment: None, database_url: str, nats_url: str
) -> None:
    before = await status_cli.collect(nats_url, timeout=1)
    health = {row.service: row.health for row in before.services}
    assert {s: health[s] for s in suite.runtimes} == dict.fromkeys(suite.runtimes, "SERVING")
    assert health["payments"].startswith("UNREACHABLE")
    assert not before.healthy
    backlog = {row.service: row.outbox_backlog for row in before.services}
    assert all(backlog[s].isdigit() for s in suite.runtimes), backlog
    assert backlog["payments"] == "not migrated"
    consumers = {c.consumer for c in before.consumers}
    assert {
        "invoicing-subscriptions",
        "usage-subscriptions",
        "subscriptions-catalog-projection",
    } <= consumers
    assert before.billing_clock == "last run at never"
    assert before.payment_sync.startswith("unknown")
    assert before.invoices == "none"

    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    org, _ = await subscribed_org(suite, start)
    subscriptions_api = subscriptions_pb2_grpc.SubscriptionsServiceStub(
        suite.channels["subscriptions"]
    )
    await subscriptions_api.ClosePeriods(
        subscriptions_pb2.ClosePeriodsRequest(now=to_timestamp(end)), timeout=TIMEOUT
    )
    invoicing_api = invoicing_pb2_grpc.InvoicingServiceStub(suite.channels["invoicing"])
    await eventually(
        lambda: invoicing_api.ListInvoices(
            invoicing_pb2.ListInvoicesRequest(org_id=org), timeout=TIMEOUT
        ),
        lambda r: len(r.invoices) == 1,
    )
    await _payments_synced(database_url)

    after = await status_cli.collect(nats_url, timeout=1)
    assert after.billing_clock == f"last run at {end.isoformat().replace('+00:00', 'Z')}"
    assert after.invoices == "finalized 1"
    assert after.payment_sync == "last at 2026-11-29T06:30:00Z (stripe_payments)"
    lag = {c.consumer: c for c in after.consumers}["invoicing-subscriptions"]
    assert lag.stream == "TALLY_SUBSCRIPTIONS" and lag.redelivered >= 0

    # The command prints the same picture on one screen and exits 1 while a
    # service is down.
    code, screen = await asyncio.to_thread(_run_cli)
    assert code == status_cli.EXIT_UNHEALTHY
    lines = screen.splitlines()
    assert len(lines) < 40
    usage_row = next(line for line in lines if line.startswith("usage "))
    assert suite.address("usage") in usage_row and "SERVING" in usage_row
    assert any(line.startswith("invoicing-subscriptions") for line in lines)
    assert any("invoices" in line and "finalized 1" in line for line in lines)


def _run_cli() -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["status", "--timeout", "1"])
    return code, out.getvalue()
