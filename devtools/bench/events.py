"""The usage events every ingestion path and the floor store: one shape, many keys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from tally.usage.v1 import resources_pb2

# Events of one org arrive together, as a producer serving that org sends
# them: a 1,000-event batch touches 10 orgs, so concurrent batches update
# different aggregates (a batch spraying every org would serialise them all
# on the same aggregate rows, a contention figure, not a throughput one).
EVENTS_PER_ORG_RUN = 100


@dataclass(frozen=True)
class EventPlan:
    """``count`` events named ``{prefix}-{i}`` spread over ``orgs``, all at ``at``."""

    prefix: str
    count: int
    orgs: Sequence[str]
    metric_code: str
    at: datetime
    # Consecutive events of one org. One by one (RecordUsage), 1 spreads the
    # calls in flight over as many orgs, as independent callers would be.
    run: int = EVENTS_PER_ORG_RUN

    def org_of(self, index: int) -> str:
        return self.orgs[(index // self.run) % len(self.orgs)]

    def key_of(self, index: int) -> str:
        return f"{self.prefix}-{index}"

    def messages(self, start: int = 0, stop: int | None = None) -> list[resources_pb2.UsageEvent]:
        stamp = Timestamp()
        stamp.FromDatetime(self.at)
        return [
            resources_pb2.UsageEvent(
                org_id=self.org_of(i),
                metric_code=self.metric_code,
                idempotency_key=self.key_of(i),
                event_time=stamp,
            )
            for i in range(start, self.count if stop is None else stop)
        ]

    def batches(self, size: int) -> Iterator[list[resources_pb2.UsageEvent]]:
        for start in range(0, self.count, size):
            yield self.messages(start, min(start + size, self.count))

    def json_batches(self, size: int) -> Iterator[dict[str, Any]]:
        """The gateway's JSON body for ``RecordUsageBatch`` (proto3 JSON names)."""
        at = self.at.isoformat().replace("+00:00", "Z")
        for start in range(0, self.count, size):
            yield {
                "events": [
                    {
                        "orgId": self.org_of(i),
                        "metricCode": self.metric_code,
                        "idempotencyKey": self.key_of(i),
                        "eventTime": at,
                    }
                    for i in range(start, min(start + size, self.count))
                ]
            }
