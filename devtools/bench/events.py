"""The usage events every ingestion path and the floor store: one shape, many keys."""

from __future__ import annotations

import math
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

    def org_batches(self, size: int) -> Iterator[tuple[str, range]]:
        """Batches of at most ``size`` events, each of one org (a dialect call is one API key's)."""
        for start in range(0, self.count, size):
            stop = min(start + size, self.count)
            org = self.org_of(start)
            if self.org_of(stop - 1) != org:
                raise ValueError(f"a batch of {size} spans two orgs: make run a multiple of it")
            yield org, range(start, stop)

    def lago_batches(self, size: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """Lago's ``/api/v1/events/batch`` body per org: ``{"events": [...]}``."""
        stamp = self.at.timestamp()
        for org, indexes in self.org_batches(size):
            yield (
                org,
                {
                    "events": [
                        {
                            "transaction_id": self.key_of(i),
                            "external_customer_id": org,
                            "code": self.metric_code,
                            "timestamp": stamp,
                        }
                        for i in indexes
                    ]
                },
            )

    def cloudevents_batches(self, size: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """OpenMeter's CloudEvents batch per org (``application/cloudevents-batch+json``)."""
        at = self.at.isoformat().replace("+00:00", "Z")
        for org, indexes in self.org_batches(size):
            yield (
                org,
                [
                    {
                        "specversion": "1.0",
                        "id": self.key_of(i),
                        "source": "bench",
                        "type": self.metric_code,
                        "subject": org,
                        "time": at,
                    }
                    for i in indexes
                ],
            )

    def stripe_batches(self, size: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stripe's v2 ``meter_event_stream`` body per org: ``{"events": [...]}``."""
        # Stripe's timestamp is whole seconds: rounded up, so an event never
        # falls before a period that started within the same second.
        stamp = math.ceil(self.at.timestamp())
        for org, indexes in self.org_batches(size):
            yield (
                org,
                {
                    "events": [
                        {
                            "event_name": self.metric_code,
                            "identifier": self.key_of(i),
                            "timestamp": stamp,
                            "payload": {"stripe_customer_id": org},
                        }
                        for i in indexes
                    ]
                },
            )
