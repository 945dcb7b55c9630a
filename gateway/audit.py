"""The audit log of admin mutations.

Durable as append-only JSON lines (one file per UTC day) under
``GATEWAY_AUDIT_DIR``: the gateway owns no database today, and a line is
written and flushed before the response leaves. The newest entries are also
kept in memory for ``GET /super-admin/billing/v1/audit``; at start-up the
memory ring is refilled from the files, so a restart loses no history there.
A later issue can move this to a gateway-owned PostgreSQL table (same fields)
with real queries and retention.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    time: str  # RFC 3339, UTC
    actor: str  # the token's subject
    role: str  # billing_admin / billing_support
    action: str  # the RPC: tally.catalog.v1.CatalogService.CreateMetric
    method: str  # POST, PATCH, ...
    target: str  # the request path
    request_id: str
    status: int  # the HTTP status answered
    outcome: str  # "ok" or the problem reason


class AuditLog:
    def __init__(self, directory: str | None, memory_entries: int) -> None:
        self._dir = Path(directory) if directory else None
        self._recent: deque[AuditEntry] = deque(maxlen=memory_entries)
        self._lock = asyncio.Lock()
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._recent.extend(self._load(memory_entries))

    def _load(self, limit: int) -> list[AuditEntry]:
        assert self._dir is not None
        entries: deque[AuditEntry] = deque(maxlen=limit)
        for path in sorted(self._dir.glob("audit-*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    entries.append(AuditEntry(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a torn last line after a crash is skipped, not fatal
        return list(entries)

    def _append(self, entry: AuditEntry) -> None:
        assert self._dir is not None
        path = self._dir / f"audit-{entry.time[:10]}.jsonl"
        line = json.dumps(asdict(entry), separators=(",", ":")) + "\n"
        # O_APPEND: each line lands whole at the end, even with several writers.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    async def record(self, **fields: Any) -> AuditEntry:
        entry = AuditEntry(time=datetime.now(UTC).isoformat(timespec="milliseconds"), **fields)
        async with self._lock:
            if self._dir is not None:
                await asyncio.to_thread(self._append, entry)
            self._recent.append(entry)
        return entry

    def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target_prefix: str | None = None,
        since: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first, filtered."""

        def keep(e: AuditEntry) -> bool:
            return (
                (actor is None or e.actor == actor)
                and (action is None or e.action == action or e.action.endswith("." + action))
                and (target_prefix is None or e.target.startswith(target_prefix))
                and (since is None or e.time >= since)
            )

        result: list[AuditEntry] = []
        for entry in reversed(self._recent):
            if keep(entry):
                result.append(entry)
                if len(result) >= limit:
                    break
        return result

    def entries(self) -> Iterable[AuditEntry]:
        return tuple(self._recent)
