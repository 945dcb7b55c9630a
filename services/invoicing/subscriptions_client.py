"""Invoicing's call on the subscriptions service: a plan change checked
without being made (``ChangePlan`` with ``validate_only``), which
PreviewPlanChange then prices.

One channel per process, reused; a deadline on every call. The service's
refusals (NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT with their reasons,
metadata and field violations) are relayed unchanged, so a quote fails
exactly as the change would; anything else is ``Unavailable``
(SUBSCRIPTIONS_UNAVAILABLE).
"""

from __future__ import annotations

import grpc
from tally.subscriptions.v1 import subscriptions_pb2 as subs_api
from tally.subscriptions.v1 import subscriptions_pb2_grpc

from services.kit.errors import Unavailable
from services.kit.rpc.channels import traced_channel
from services.kit.rpc.status import error_from_call


class SubscriptionsClient:
    def __init__(self, address: str, deadline: float) -> None:
        self.address = address
        self.deadline = deadline
        self._channel: grpc.aio.Channel | None = None
        self._stub: subscriptions_pb2_grpc.SubscriptionsServiceStub | None = None

    def _get_stub(self) -> subscriptions_pb2_grpc.SubscriptionsServiceStub:
        if self._stub is None:
            self._channel = traced_channel(self.address)
            self._stub = subscriptions_pb2_grpc.SubscriptionsServiceStub(self._channel)
        return self._stub

    async def validate_change(
        self, request: subs_api.ChangePlanRequest
    ) -> subs_api.ChangePlanResponse:
        checked = subs_api.ChangePlanRequest()
        checked.CopyFrom(request)
        checked.validate_only = True
        try:
            reply: subs_api.ChangePlanResponse = await self._get_stub().ChangePlan(
                checked, timeout=self.deadline
            )
        except grpc.aio.AioRpcError as err:
            relayed = error_from_call(err)
            if relayed is None or isinstance(relayed, Unavailable):
                raise Unavailable(
                    message=f"subscriptions service at {self.address}: {err.code().name}",
                    reason="SUBSCRIPTIONS_UNAVAILABLE",
                ) from None
            raise relayed from None
        return reply

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


_clients: dict[str, SubscriptionsClient] = {}


def shared_client(address: str, deadline: float) -> SubscriptionsClient:
    """One client (one channel) per address per process."""
    client = _clients.get(address)
    if client is None:
        client = _clients[address] = SubscriptionsClient(address, deadline)
    return client
