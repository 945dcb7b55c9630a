"""The one call invoicing makes on another service: period aggregates from usage.

One channel per process, reused; a deadline on every call; a failure becomes
``Unavailable`` (the period-close event is retried with backoff by the kit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import grpc
from tally.usage.v1 import usage_pb2, usage_pb2_grpc

from services.kit.errors import Unavailable
from services.kit.rpc.channels import traced_channel


@dataclass(frozen=True)
class Aggregate:
    value: Decimal
    event_values: tuple[Decimal, ...]


class UsageReader:
    def __init__(self, address: str, deadline: float) -> None:
        self.address = address
        self.deadline = deadline
        self._channel: grpc.aio.Channel | None = None
        self._stub: usage_pb2_grpc.UsageServiceStub | None = None

    def _get_stub(self) -> usage_pb2_grpc.UsageServiceStub:
        if self._stub is None:
            self._channel = traced_channel(self.address)
            self._stub = usage_pb2_grpc.UsageServiceStub(self._channel)
        return self._stub

    async def aggregate(
        self,
        subscription_id: str,
        org_id: str,
        metric_code: str,
        period_start: datetime | None,
        *,
        with_values: bool = False,
    ) -> Aggregate:
        request = usage_pb2.GetAggregateRequest(
            subscription_id=subscription_id,
            metric_code=metric_code,
            org_id=org_id,
            include_event_values=with_values,
        )
        if period_start is not None:
            request.period_start_time.FromDatetime(period_start)
        try:
            reply = await self._get_stub().GetAggregate(request, timeout=self.deadline)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return Aggregate(Decimal(0), ())
            raise Unavailable(
                message=f"usage service at {self.address}: {err.code().name}",
                reason="USAGE_UNAVAILABLE",
            ) from None
        value = Decimal(reply.aggregate.value or "0")
        return Aggregate(value, tuple(Decimal(v) for v in reply.event_values))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


_readers: dict[str, UsageReader] = {}


def shared_reader(address: str, deadline: float) -> UsageReader:
    """One reader (one channel) per address per process."""
    reader = _readers.get(address)
    if reader is None:
        reader = _readers[address] = UsageReader(address, deadline)
    return reader
