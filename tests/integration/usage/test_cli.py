"""``tally usage import`` and ``tally usage backfill`` against the running service:
importing twice equals importing once."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tally.usage.v1 import usage_pb2_grpc

from services.cli.main import main
from services.kit import migrations
from tests.support.usage import Seeder, aggregate, uid, usage_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(
    database_url: str, nats_url: str
) -> AsyncIterator[tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder]]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (runtime, stub, seeder, _bus):
        await seeder.metrics()
        yield runtime, stub, seeder


async def tally(*argv: str) -> int:
    # The CLI is synchronous and the service shares this loop: run it aside.
    return await asyncio.to_thread(main, list(argv))


async def test_import_json_lines_and_csv_twice_counts_once(
    stack: tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, stub, seeder = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    at = (datetime.now(UTC) - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    jsonl = tmp_path / "events.jsonl"
    lines = [
        {"id": f"j{i}", "org_id": org, "metric": "bytes_sent", "value": "2.5", "time": at}
        for i in range(2500)
    ]
    lines.append(lines[0])  # a duplicate inside the file
    lines.append({"id": "bad", "org_id": org, "metric_code": "nope", "time": at})
    lines.append(
        {"id": "u1", "org_id": org, "metric_code": "active_users", "data": {"user_id": "ann"}}
    )
    jsonl.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    table = tmp_path / "events.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["idempotency_key", "org_id", "metric_code", "event_time", "properties.user_id"]
        )
        for i in range(30):
            writer.writerow([f"c{i}", org, "active_users", at, f"user{i % 7}"])

    address = f"127.0.0.1:{runtime.port}"
    assert await tally("usage", "import", str(jsonl), "--address", address) == 0
    first = capsys.readouterr()
    assert "2503 events: 2501 accepted, 1 duplicates, 1 rejected" in first.out
    assert "rejected UNKNOWN_METRIC: 1" in first.out
    assert "imported 2503 events" in first.err  # the progress line
    assert await tally("usage", "import", str(table), "--address", address, "--quiet") == 0
    assert "30 events: 30 accepted" in capsys.readouterr().out

    assert await tally("usage", "import", str(jsonl), "--address", address) == 0
    assert "2503 events: 0 accepted, 2502 duplicates, 1 rejected" in capsys.readouterr().out
    assert await tally("usage", "import", str(table), "--address", address) == 0
    assert "30 events: 0 accepted, 30 duplicates" in capsys.readouterr().out

    assert await aggregate(stub, sub, "bytes_sent") == (Decimal("6250"), 2500)
    assert await aggregate(stub, sub, "active_users") == (Decimal(8), 31)

    assert (
        await tally(
            "usage",
            "backfill",
            "--org",
            org,
            "--start",
            "2020-01-01T00:00:00Z",
            "--end",
            "2100-01-01T00:00:00Z",
            "--dry-run",
            "--address",
            address,
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "scanned 2531 events, checked 2 aggregates, 0 differ (dry run" in out


async def test_import_reports_a_bad_file(
    stack: tuple[Any, usage_pb2_grpc.UsageServiceStub, Seeder],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _, _ = stack
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a"}\nnot json\n')
    code = await tally("usage", "import", str(broken), "--address", f"127.0.0.1:{runtime.port}")
    assert code == 1
    assert "broken.jsonl:2: not JSON" in capsys.readouterr().err
    missing = await tally("usage", "import", str(tmp_path / "none.csv"))
    assert missing == 1
