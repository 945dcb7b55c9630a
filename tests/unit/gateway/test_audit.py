"""The audit log survives a restart and filters as documented."""

from __future__ import annotations

from pathlib import Path

from gateway.audit import AuditLog


def tear_last_line(directory: Path) -> None:
    """What a crash in the middle of a write leaves behind."""
    with next(directory.glob("audit-*.jsonl")).open("a") as file:
        file.write('{"torn": ')


def files_in(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def test_entries_are_durable_and_filtered(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path), memory_entries=100)
    common = {"role": "billing_admin", "method": "POST", "status": 200, "outcome": "ok"}
    await log.record(
        actor="a",
        action="tally.catalog.v1.CatalogService.CreateMetric",
        target="/super-admin/billing/v1/metrics",
        request_id="r1",
        **common,
    )
    await log.record(
        actor="b",
        action="tally.catalog.v1.CatalogService.PublishPackage",
        target="/super-admin/billing/v1/packages/p:publish",
        request_id="r2",
        **common,
    )
    tear_last_line(tmp_path)

    reopened = AuditLog(str(tmp_path), memory_entries=100)
    assert [e.request_id for e in reopened.query()] == ["r2", "r1"]
    assert [e.request_id for e in reopened.query(actor="a")] == ["r1"]
    assert [e.request_id for e in reopened.query(action="PublishPackage")] == ["r2"]
    assert [
        e.request_id for e in reopened.query(target_prefix="/super-admin/billing/v1/packages")
    ] == ["r2"]
    assert reopened.query(limit=1)[0].request_id == "r2"


async def test_memory_only(tmp_path: Path) -> None:
    log = AuditLog(None, memory_entries=2)
    for i in range(3):
        await log.record(
            actor="a",
            role="r",
            action="x",
            method="POST",
            target="/t",
            request_id=str(i),
            status=200,
            outcome="ok",
        )
    assert [e.request_id for e in log.query()] == ["2", "1"]
    assert not files_in(tmp_path)
