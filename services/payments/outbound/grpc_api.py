"""gRPC adapter of outbound webhooks: the webhook RPCs of PaymentsService,
mixed into the service's servicer. Decode, collect every field violation,
run the use case (mutations in ``run_mutation``), answer protobuf."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from tally.payments.v1 import webhooks_pb2 as api

from services.kit.clock import Clock, SystemClock
from services.kit.errors import Violations
from services.kit.idempotency import run_mutation
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.protoconv import to_timestamp
from services.kit.runtime import ServiceContext
from services.payments.outbound import domain as d
from services.payments.outbound import handlers as h
from services.payments.outbound.store import Delivery, Endpoint
from services.payments.repository import PaymentsUnitOfWork

R = TypeVar("R", bound=Message)
MAX_PAGE = 500
UPDATABLE = frozenset({"url", "event_types", "description", "enabled"})
DEFAULT_MASK = ("url", "event_types", "description")

_STATES = {
    d.DeliveryState.PENDING: api.WEBHOOK_DELIVERY_STATE_PENDING,
    d.DeliveryState.SUCCEEDED: api.WEBHOOK_DELIVERY_STATE_SUCCEEDED,
    d.DeliveryState.FAILED: api.WEBHOOK_DELIVERY_STATE_FAILED,
}


def endpoint_pb(e: Endpoint) -> api.WebhookEndpoint:
    return api.WebhookEndpoint(
        endpoint_id=e.endpoint_id,
        org_id=e.org_id,
        url=e.url,
        description=e.description,
        event_types=list(e.event_types),
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        failing_since_time=to_timestamp(e.failing_since),
        create_time=to_timestamp(e.create_time),
        update_time=to_timestamp(e.update_time),
    )


def delivery_pb(x: Delivery) -> api.WebhookDelivery:
    return api.WebhookDelivery(
        delivery_id=x.delivery_id,
        endpoint_id=x.endpoint_id,
        event_id=x.event_id,
        event_type=x.event_type,
        state=_STATES[x.state],
        attempt_count=x.attempt_count,
        next_attempt_time=to_timestamp(x.next_attempt_time),
        last_attempt_time=to_timestamp(x.last_attempt_time),
        last_status_code=x.last_status_code or 0,
        last_response_ms=x.last_response_ms or 0,
        last_error=x.last_error,
        create_time=to_timestamp(x.create_time),
        payload=x.payload,
    )


class WebhookEndpointsApi:
    """Mixed into PaymentsApi, which sets ``ctx``, ``make_uow`` and
    ``wake_webhooks`` (the dispatcher's wake-up, for a resend)."""

    ctx: ServiceContext
    make_uow: Callable[[], PaymentsUnitOfWork]
    wake_webhooks: Callable[[], None]
    webhook_clock: Clock = SystemClock()

    async def _webhook_mutation(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        work: Callable[[PaymentsUnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_mutation(
            self.make_uow, self.ctx.requests, method, request, response_type, work
        )

    async def CreateWebhookEndpoint(
        self, request: api.CreateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api.CreateWebhookEndpointResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.url, "url")
        v.raise_if_any()
        new = h.NewEndpoint(
            org_id=request.org_id,
            url=request.url,
            event_types=list(request.event_types),
            description=request.description,
            secret=request.secret,
        )

        async def work(uow: PaymentsUnitOfWork) -> api.CreateWebhookEndpointResponse:
            created = await h.create_endpoint(uow, new, self.webhook_clock.now())
            return api.CreateWebhookEndpointResponse(
                webhook_endpoint=endpoint_pb(created), secret=created.secret
            )

        return await self._webhook_mutation(
            "CreateWebhookEndpoint", request, api.CreateWebhookEndpointResponse, work
        )

    async def ListWebhookEndpoints(
        self, request: api.ListWebhookEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListWebhookEndpointsResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.raise_if_any()
        size = page_size(request.page_size, maximum=MAX_PAGE)
        filters = {"org_id": request.org_id}
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            rows = await uow.webhooks.endpoints(
                request.org_id, token.after if token else None, size + 1
            )
        return api.ListWebhookEndpointsResponse(
            webhook_endpoints=[endpoint_pb(e) for e in rows[:size]],
            next_page_token=next_page_token(
                rows, size, lambda e: [e.create_time.isoformat(), e.endpoint_id], filters
            ),
        )

    async def GetWebhookEndpoint(
        self, request: api.GetWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api.GetWebhookEndpointResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.endpoint_id, "endpoint_id")
        v.raise_if_any()
        async with self.make_uow() as uow:
            found = await h.get_endpoint(uow, request.endpoint_id, request.org_id)
        return api.GetWebhookEndpointResponse(webhook_endpoint=endpoint_pb(found))

    async def UpdateWebhookEndpoint(
        self, request: api.UpdateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api.UpdateWebhookEndpointResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.webhook_endpoint.endpoint_id, "webhook_endpoint.endpoint_id")
        paths = list(request.update_mask.paths) or list(DEFAULT_MASK)
        for i, path in enumerate(request.update_mask.paths):
            v.check(
                path in UPDATABLE,
                f"update_mask.paths[{i}]",
                f"{path!r} cannot be updated; updatable: {', '.join(sorted(UPDATABLE))}",
            )
        v.raise_if_any()
        e = request.webhook_endpoint
        change = h.EndpointChange(
            url=e.url if "url" in paths else None,
            event_types=list(e.event_types) if "event_types" in paths else None,
            description=e.description if "description" in paths else None,
            enabled=e.enabled if "enabled" in paths else None,
        )

        async def work(uow: PaymentsUnitOfWork) -> api.UpdateWebhookEndpointResponse:
            updated = await h.update_endpoint(
                uow, e.endpoint_id, request.org_id, change, self.webhook_clock.now()
            )
            return api.UpdateWebhookEndpointResponse(webhook_endpoint=endpoint_pb(updated))

        return await self._webhook_mutation(
            "UpdateWebhookEndpoint", request, api.UpdateWebhookEndpointResponse, work
        )

    async def DeleteWebhookEndpoint(
        self, request: api.DeleteWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api.DeleteWebhookEndpointResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.endpoint_id, "endpoint_id")
        v.raise_if_any()

        async def work(uow: PaymentsUnitOfWork) -> api.DeleteWebhookEndpointResponse:
            gone = await h.delete_endpoint(
                uow, request.endpoint_id, request.org_id, self.webhook_clock.now()
            )
            return api.DeleteWebhookEndpointResponse(webhook_endpoint=endpoint_pb(gone))

        return await self._webhook_mutation(
            "DeleteWebhookEndpoint", request, api.DeleteWebhookEndpointResponse, work
        )

    async def RotateWebhookEndpointSecret(
        self,
        request: api.RotateWebhookEndpointSecretRequest,
        context: grpc.aio.ServicerContext,
    ) -> api.RotateWebhookEndpointSecretResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.endpoint_id, "endpoint_id")
        v.raise_if_any()

        async def work(uow: PaymentsUnitOfWork) -> api.RotateWebhookEndpointSecretResponse:
            rotated = await h.rotate_secret(
                uow, request.endpoint_id, request.org_id, self.webhook_clock.now(), request.secret
            )
            return api.RotateWebhookEndpointSecretResponse(
                webhook_endpoint=endpoint_pb(rotated), secret=rotated.secret
            )

        return await self._webhook_mutation(
            "RotateWebhookEndpointSecret", request, api.RotateWebhookEndpointSecretResponse, work
        )

    async def ListWebhookDeliveries(
        self, request: api.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> api.ListWebhookDeliveriesResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.endpoint_id, "endpoint_id")
        v.raise_if_any()
        size = page_size(request.page_size, maximum=MAX_PAGE)
        filters = {"org_id": request.org_id, "endpoint_id": request.endpoint_id}
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            rows = await h.list_deliveries(
                uow,
                request.endpoint_id,
                request.org_id,
                token.after if token else None,
                size + 1,
            )
        return api.ListWebhookDeliveriesResponse(
            webhook_deliveries=[delivery_pb(x) for x in rows[:size]],
            next_page_token=next_page_token(
                rows, size, lambda x: [x.create_time.isoformat(), x.delivery_id], filters
            ),
        )

    async def ResendWebhookDelivery(
        self, request: api.ResendWebhookDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> api.ResendWebhookDeliveryResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.delivery_id, "delivery_id")
        v.raise_if_any()

        async def work(uow: PaymentsUnitOfWork) -> api.ResendWebhookDeliveryResponse:
            again = await h.resend(
                uow, request.delivery_id, request.org_id, self.webhook_clock.now()
            )
            uow.after_commit(self.wake_webhooks)
            return api.ResendWebhookDeliveryResponse(webhook_delivery=delivery_pb(again))

        return await self._webhook_mutation(
            "ResendWebhookDelivery", request, api.ResendWebhookDeliveryResponse, work
        )
