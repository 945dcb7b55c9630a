"""``tally invoicing run`` as an operator runs it: a subprocess of the real CLI
against the invoicing service in process (real PostgreSQL and NATS), the
address taken from ``INVOICING_ADDR`` as the CLI reads it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tally.events.v1 import subscriptions_events_pb2
from tally.invoicing.v1 import invoicing_pb2 as api
from tally.invoicing.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb2

from services.kit.protoconv import to_timestamp
from tests.support.invoicing import (
    Harness,
    amounts,
    new_id,
    running_invoicing,
    version,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DEC, JAN = datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
BASIC = version("cli-basic", base_fee="10")  # in advance


@pytest.fixture(scope="module")
async def h(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_invoicing(database_url, nats_url) as harness:
        await harness.publish_version(BASIC)
        yield harness


async def tally(h: Harness, *argv: str) -> tuple[int, str, str]:
    # A real process: the service runs on this test's event loop, so the CLI
    # must not block it (asyncio subprocess, not subprocess.run).
    env = {**os.environ, "INVOICING_ADDR": f"127.0.0.1:{h.runtime.port}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "invoicing",
        "run",
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _subscribed(h: Harness) -> tuple[str, str]:
    org, sub = new_id("org"), new_id("sub")
    await h.publish(
        subscriptions_events_pb2.SubscriptionCreatedEvent(
            subscription=subs_pb2.Subscription(
                subscription_id=sub,
                org_id=org,
                state=subs_pb2.SUBSCRIPTION_STATE_ACTIVE,
                package_version_id=BASIC.package_version_id,
                currency_code="USD",
                current_period_start_time=to_timestamp(DEC),
                current_period_end_time=to_timestamp(JAN),
                update_time=to_timestamp(DEC),
            )
        ),
        sub,
    )

    async def projected() -> bool:
        try:
            await h.stub.PreviewInvoice(
                api.PreviewInvoiceRequest(org_id=org, subscription_id=sub), timeout=5
            )
        except Exception:
            return False
        return True

    await wait_for(projected)
    return org, sub


async def test_run_invoices_the_current_period_once(h: Harness) -> None:
    org, sub = await _subscribed(h)
    args = ("--org", org, "--subscription", sub, "--period-start", "2026-12-01T00:00:00Z")
    code, out, err = await tally(h, *args)
    assert (code, err) == (0, "")
    (inv,) = await h.invoices(sub)
    # December under basic, nothing billed in advance: 10.00, finalized at once.
    assert amounts(inv) == [("INVOICE_LINE_KIND_BASE_FEE", 1000)]
    assert inv.reason == pb.INVOICE_REASON_MANUAL and inv.state == pb.INVOICE_STATE_FINALIZED
    assert out == f"created {inv.invoice_id} {inv.number} total 1000 USD\n"
    assert inv.number.endswith("-000001")

    # Run again (an offset spelling of the same instant): the same invoice.
    code, out, err = await tally(
        h, "--org", org, "--subscription", sub, "--period-start", "2026-12-01T01:00:00+01:00"
    )
    assert (code, err) == (0, "")
    assert out == f"exists {inv.invoice_id} {inv.number} total 1000 USD\n"
    assert len(await h.invoices(sub)) == 1


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (("--org", "o", "--subscription", "s", "--period-start", "soon"), "ISO 8601"),
        (("--org", "o", "--subscription", "s", "--period-start", "2026-12-01"), "timezone"),
        (("--org", "o"), "required: --subscription, --period-start"),
        (
            ("--org", "o", "--subscription", "s", "--period-start", "2026-12-01T00:00:00Z", "-x"),
            "-x",
        ),
    ],
)
async def test_bad_arguments_are_one_error_line(
    h: Harness, argv: tuple[str, ...], wanted: str
) -> None:
    code, out, err = await tally(h, *argv)
    assert code == 1 and out == ""
    assert err.startswith("tally: error: ") and wanted in err
    assert err.count("\n") == 1


async def test_unknown_period_or_subscription_is_one_error_line(h: Harness) -> None:
    org, sub = await _subscribed(h)
    code, out, err = await tally(
        h, "--org", org, "--subscription", sub, "--period-start", "2026-11-01T00:00:00Z"
    )
    assert (code, out) == (1, "")
    assert err.startswith("tally: error: run at ") and "NOT_FOUND" in err
    assert "neither invoiced nor the subscription's current period" in err
    assert err.count("\n") == 1
    code, out, err = await tally(
        h, "--org", "org_other", "--subscription", sub, "--period-start", "2026-12-01T00:00:00Z"
    )
    assert code == 1 and "NOT_FOUND" in err and err.count("\n") == 1
    assert await h.invoices(sub) == []
