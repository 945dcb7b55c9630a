"""The one call invoicing makes on another service: period aggregates from usage.

One channel per process, reused; a deadline on every call; a failure becomes
``Unavailable`` (the period-close event is retried with backoff by the kit).
``aggregates`` reads many at once (BatchGetAggregates) for a consumer group.
"""

from __future__ import annotations

from collections.abc import Sequence
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


ZERO = Aggregate(Decimal(0), ())

# BatchGetAggregates' bound per call.
MAX_BATCH = 1000


@dataclass(frozen=True)
class AggregateKey:
    """One read of ``UsageReader.aggregate``: its arguments."""

    subscription_id: str
    org_id: str
    metric_code: str
    period_start: datetime | None
    with_values: bool = False


def _request(key: AggregateKey) -> usage_pb2.GetAggregateRequest:
    request = usage_pb2.GetAggregateRequest(
        subscription_id=key.subscription_id,
        metric_code=key.metric_code,
        org_id=key.org_id,
        include_event_values=key.with_values,
    )
    if key.period_start is not None:
        request.period_start_time.FromDatetime(key.period_start)
    return request


def _answer(reply: usage_pb2.GetAggregateResponse) -> Aggregate:
    return Aggregate(
        Decimal(reply.aggregate.value or "0"), tuple(Decimal(v) for v in reply.event_values)
    )


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

    def _unavailable(self, err: grpc.aio.AioRpcError) -> Unavailable:
        return Unavailable(
            message=f"usage service at {self.address}: {err.code().name}",
            reason="USAGE_UNAVAILABLE",
        )

    async def aggregate(
        self,
        subscription_id: str,
        org_id: str,
        metric_code: str,
        period_start: datetime | None,
        *,
        with_values: bool = False,
    ) -> Aggregate:
        key = AggregateKey(subscription_id, org_id, metric_code, period_start, with_values)
        try:
            reply = await self._get_stub().GetAggregate(_request(key), timeout=self.deadline)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return ZERO
            raise self._unavailable(err) from None
        return _answer(reply)

    async def aggregates(self, keys: Sequence[AggregateKey]) -> dict[AggregateKey, Aggregate]:
        """Many ``aggregate`` reads in BatchGetAggregates calls of up to 1,000.

        A call usage answers NOT_FOUND (one of its reads is missing, which
        fails the whole call) or does not serve yet (an older replica) stops
        the reading: the caller reads each key not in the answer alone, where
        NOT_FOUND reads as zero.
        """
        wanted = list(dict.fromkeys(keys))
        found: dict[AggregateKey, Aggregate] = {}
        for at in range(0, len(wanted), MAX_BATCH):
            chunk = wanted[at : at + MAX_BATCH]
            request = usage_pb2.BatchGetAggregatesRequest(requests=[_request(k) for k in chunk])
            try:
                reply = await self._get_stub().BatchGetAggregates(request, timeout=self.deadline)
            except grpc.aio.AioRpcError as err:
                if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                    return found
                raise self._unavailable(err) from None
            found.update(zip(chunk, map(_answer, reply.responses), strict=True))
        return found

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
