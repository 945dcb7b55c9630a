"""``tally usage import`` and ``tally usage backfill``: ops tools over gRPC.

Both go through the service's public API, so an import takes exactly the
idempotent path product code takes: re-running it finds every event stored
and changes nothing.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tally.usage.v1 import resources_pb2, usage_pb2, usage_pb2_grpc

from services.kit.cliargs import parse_instant
from services.kit.rpc.actor import cli_channel

BATCH = 1000

# Accepted field names, canonical first, then CloudEvents-style aliases.
_FIELDS: Mapping[str, tuple[str, ...]] = {
    "org_id": ("org_id", "org", "subject"),
    "metric_code": ("metric_code", "metric", "type"),
    "value": ("value",),
    "event_time": ("event_time", "time", "timestamp"),
    "idempotency_key": ("idempotency_key", "id", "event_id"),
    "subscription_id": ("subscription_id",),
}


class BadImportFile(Exception):
    """A line that cannot become an event; names the file position."""


def _pick(record: Mapping[str, Any], name: str) -> str:
    for alias in _FIELDS[name]:
        value = record.get(alias)
        if value not in (None, ""):
            return str(value)
    return ""


def to_event(record: Mapping[str, Any], where: str) -> resources_pb2.UsageEvent:
    """One JSON object or CSV row as a UsageEvent.

    Properties come from a ``properties`` (or CloudEvents ``data``) object, or
    from CSV columns named ``properties.<key>``.
    """
    properties: dict[str, str] = {}
    nested = record.get("properties") or record.get("data")
    if isinstance(nested, str) and nested.strip().startswith("{"):
        nested = json.loads(nested)
    if isinstance(nested, Mapping):
        properties.update({str(k): str(v) for k, v in nested.items()})
    for key, value in record.items():
        if key.startswith("properties.") and value not in (None, ""):
            properties[key.removeprefix("properties.")] = str(value)
    event = resources_pb2.UsageEvent(
        org_id=_pick(record, "org_id"),
        metric_code=_pick(record, "metric_code"),
        value=_pick(record, "value"),
        idempotency_key=_pick(record, "idempotency_key"),
        subscription_id=_pick(record, "subscription_id"),
        properties=properties,
    )
    at = _pick(record, "event_time")
    if at:
        try:
            instant = parse_instant(at)
        except ValueError as exc:
            raise BadImportFile(f"{where}: bad event_time: {exc}") from None
        ts = Timestamp()
        ts.FromDatetime(instant)
        event.event_time.CopyFrom(ts)
    return event


def read_events(path: Path) -> Iterator[resources_pb2.UsageEvent]:
    """JSON lines (``.jsonl``/``.ndjson``/``.json``) or CSV (``.csv``), streamed."""
    with path.open(newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield to_event(row, f"{path}:{number}")
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadImportFile(f"{path}:{number}: not JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise BadImportFile(f"{path}:{number}: expected a JSON object")
            yield to_event(record, f"{path}:{number}")


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: dict[str, int] | None = None

    @property
    def total(self) -> int:
        return self.accepted + self.duplicates + self.rejected


def _progress(out: TextIO, report: ImportReport, final: bool = False) -> None:
    line = (
        f"\rimported {report.total} events: {report.accepted} accepted,"
        f" {report.duplicates} duplicates, {report.rejected} rejected"
    )
    out.write(line + ("\n" if final else ""))
    out.flush()


def import_file(
    path: Path,
    address: str,
    *,
    batch_size: int = BATCH,
    timeout: float = 60.0,
    progress: TextIO | None = None,
) -> ImportReport:
    """Send the file in batches; each batch is retried whole on UNAVAILABLE."""
    report = ImportReport(reasons={})
    reasons: dict[str, int] = {}
    with cli_channel(address) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        batch: list[resources_pb2.UsageEvent] = []

        def flush() -> None:
            if not batch:
                return
            request = usage_pb2.RecordUsageBatchRequest(events=batch)
            reply = _call_with_retry(stub.RecordUsageBatch, request, timeout)
            report.accepted += reply.accepted_count
            report.duplicates += reply.duplicate_count
            report.rejected += reply.rejected_count
            for r in reply.results:
                if r.status == resources_pb2.USAGE_EVENT_STATUS_REJECTED:
                    name = resources_pb2.UsageRejectionReason.Name(r.reason)
                    name = name.removeprefix("USAGE_REJECTION_REASON_")
                    reasons[name] = reasons.get(name, 0) + 1
            batch.clear()
            if progress is not None:
                _progress(progress, report)

        for event in read_events(path):
            batch.append(event)
            if len(batch) >= batch_size:
                flush()
        flush()
    report.reasons = reasons
    if progress is not None:
        _progress(progress, report, final=True)
    return report


def _call_with_retry(method: Any, request: Any, timeout: float, attempts: int = 5) -> Any:
    import time

    for attempt in range(1, attempts + 1):
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not retryable or attempt == attempts:
                raise
            # Same events, same idempotency keys: a retry cannot double count.
            time.sleep(min(5.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


def backfill(
    address: str,
    *,
    org_id: str,
    subscription_id: str,
    start: datetime,
    end: datetime,
    dry_run: bool,
    timeout: float = 120.0,
) -> usage_pb2.BackfillUsageResponse:
    request = usage_pb2.BackfillUsageRequest(
        org_id=org_id, subscription_id=subscription_id, dry_run=dry_run
    )
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    with cli_channel(address) as channel:
        reply: usage_pb2.BackfillUsageResponse = usage_pb2_grpc.UsageServiceStub(
            channel
        ).BackfillUsage(request, timeout=timeout)
    return reply


def print_backfill(reply: usage_pb2.BackfillUsageResponse, dry_run: bool, out: TextIO) -> None:
    out.write(
        f"scanned {reply.events_scanned} events, checked {reply.aggregates_checked} aggregates,"
        f" {len(reply.changes)} differ{' (dry run: nothing written)' if dry_run else ''}\n"
    )
    for c in reply.changes:
        start = c.period_start_time.ToDatetime(UTC).isoformat()
        note = "  frozen: reported, not changed" if c.frozen else ""
        out.write(
            f"  {c.subscription_id} {c.metric_code} period {start}:"
            f" {c.old_value} ({c.old_event_count} events) -> {c.new_value}"
            f" ({c.new_event_count} events){note}\n"
        )


def error_line(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def stderr() -> TextIO:
    return sys.stderr
