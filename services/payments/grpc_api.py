"""gRPC adapter of the payments service: proto -> validated command -> use case
(in ``run_mutation`` for mutations) -> proto. Provider calls happen outside
any transaction, through the Collector (services/payments/dispatch.py).
Errors are mapped by the kit's interceptor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from tally.payments.v1 import payments_pb2 as api
from tally.payments.v1 import payments_pb2_grpc

from services.kit.currency import is_iso4217
from services.kit.errors import FailedPrecondition, Violations
from services.kit.idempotency import run_mutation
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.protoconv import from_timestamp, to_timestamp
from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext
from services.payments import domain as d
from services.payments import handlers as h
from services.payments import protomap
from services.payments.dispatch import Collector, provider_call
from services.payments.outbound.grpc_api import WebhookEndpointsApi
from services.payments.provider import ProviderPaymentMethod
from services.payments.repository import PaymentsUnitOfWork

R = TypeVar("R", bound=Message)
MAX_PAGE = 500


def _size(requested: int) -> int:
    return page_size(requested, maximum=MAX_PAGE)


class PaymentsApi(WebhookEndpointsApi, payments_pb2_grpc.PaymentsServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        ctx: ServiceContext,
        collector: Collector,
        wake_webhooks: Callable[[], None] = lambda: None,
    ) -> None:
        self.ctx = ctx
        self.collector = collector
        self.make_uow: Callable[[], PaymentsUnitOfWork] = collector.make_uow
        self.wake_webhooks = wake_webhooks

    async def _mutate(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        work: Callable[[PaymentsUnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_mutation(
            self.make_uow, self.ctx.requests, method, request, response_type, work
        )

    async def _dispatch_started(self, attempts: Sequence[d.Attempt]) -> None:
        for a in attempts:
            await self.collector.dispatch(a.attempt_id)

    # ------------------------------------------------------------ payment methods

    async def CreateSetupIntent(
        self, request: api.CreateSetupIntentRequest, context: grpc.aio.ServicerContext
    ) -> api.CreateSetupIntentResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.raise_if_any()
        customer = await self.collector.customer_of(request.org_id)
        key = d.request_key("setup_intent", request.org_id, request.request_id)
        intent = await provider_call(self.collector.provider.create_setup_intent(customer, key))
        return api.CreateSetupIntentResponse(
            setup_intent_id=intent.setup_intent_id,
            client_secret=intent.client_secret,
            publishable_key=self.collector.publishable_key,
            provider=protomap.provider_pb(self.collector.provider.name),  # type: ignore[arg-type]
        )

    async def AttachPaymentMethod(
        self, request: api.AttachPaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> api.AttachPaymentMethodResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.provider_payment_method_id, "provider_payment_method_id")
        v.raise_if_any()
        org = request.org_id
        method = await self._known_method(org, request.provider_payment_method_id)
        if method is None:
            customer = await self.collector.customer_of(org)
            key = d.request_key("attach", org, request.request_id)
            method = await provider_call(
                self.collector.provider.attach_payment_method(
                    customer, request.provider_payment_method_id, key
                )
            )
        started: list[d.Attempt] = []

        async def work(uow: PaymentsUnitOfWork) -> api.AttachPaymentMethodResponse:
            row, new = await h.record_method(
                uow, org, method, request.set_default, self.collector.now(), self.collector.policy
            )
            started.extend(new)
            return api.AttachPaymentMethodResponse(payment_method=protomap.method_pb(row))

        reply = await self._mutate(
            "AttachPaymentMethod", request, api.AttachPaymentMethodResponse, work
        )
        await self._dispatch_started(started)
        return reply

    async def _known_method(self, org_id: str, provider_id: str) -> ProviderPaymentMethod | None:
        """A method the setup_intent webhook already recorded: attached at the provider."""
        async with self.make_uow() as uow:
            row = await uow.repo.method_by_provider_id(provider_id)
        if row is None or row.org_id != org_id or row.detached_time is not None:
            return None
        return ProviderPaymentMethod(
            payment_method_id=row.provider_payment_method_id,
            type=row.type,
            brand=row.brand,
            last4=row.last4,
            exp_month=row.exp_month,
            exp_year=row.exp_year,
            country=row.country,
        )

    async def SetDefaultPaymentMethod(
        self, request: api.SetDefaultPaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> api.SetDefaultPaymentMethodResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.payment_method_id, "payment_method_id")
        v.raise_if_any()
        started: list[d.Attempt] = []

        async def work(uow: PaymentsUnitOfWork) -> api.SetDefaultPaymentMethodResponse:
            row, new = await h.make_default(
                uow,
                request.org_id,
                request.payment_method_id,
                self.collector.now(),
                self.collector.policy,
            )
            started.extend(new)
            return api.SetDefaultPaymentMethodResponse(payment_method=protomap.method_pb(row))

        reply = await self._mutate(
            "SetDefaultPaymentMethod", request, api.SetDefaultPaymentMethodResponse, work
        )
        await self._dispatch_started(started)
        return reply

    async def ListPaymentMethods(
        self, request: api.ListPaymentMethodsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListPaymentMethodsResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.raise_if_any()
        size = _size(request.page_size)
        filters = {"org_id": request.org_id}
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            rows = await uow.repo.list_methods(
                request.org_id, token.after if token else None, size + 1
            )
        return api.ListPaymentMethodsResponse(
            payment_methods=[protomap.method_pb(r) for r in rows[:size]],
            next_page_token=next_page_token(
                rows,
                size,
                lambda r: [r.rank, r.create_time.isoformat(), r.payment_method_id],
                filters,
            ),
        )

    async def DetachPaymentMethod(
        self, request: api.DetachPaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> api.DetachPaymentMethodResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.payment_method_id, "payment_method_id")
        v.raise_if_any()
        async with self.make_uow() as uow:
            row = await h.get_method(uow, request.payment_method_id, request.org_id)
        await provider_call(
            self.collector.provider.detach_payment_method(row.provider_payment_method_id)
        )

        async def work(uow: PaymentsUnitOfWork) -> api.DetachPaymentMethodResponse:
            detached = await h.detach(
                uow, request.org_id, request.payment_method_id, self.collector.now()
            )
            return api.DetachPaymentMethodResponse(payment_method=protomap.method_pb(detached))

        reply = await self._mutate(
            "DetachPaymentMethod", request, api.DetachPaymentMethodResponse, work
        )
        reply.payment_method.is_default = False
        return reply

    # ------------------------------------------------------------ collection

    async def PayInvoice(
        self, request: api.PayInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> api.PayInvoiceResponse:
        v = Violations()
        v.require(request.invoice_id, "invoice_id")
        v.raise_if_any()

        async def work(uow: PaymentsUnitOfWork) -> api.PayInvoiceResponse:
            payment, attempt = await h.pay_invoice(
                uow,
                request.invoice_id,
                request.org_id,
                request.payment_method_id,
                self.collector.now(),
                self.collector.policy,
            )
            return api.PayInvoiceResponse(
                payment=protomap.payment_pb(payment), attempt=protomap.attempt_pb(attempt)
            )

        first = await self._mutate("PayInvoice", request, api.PayInvoiceResponse, work)
        # After the commit: a synchronous provider answer makes it into this reply.
        await self.collector.dispatch(first.attempt.attempt_id)
        async with self.make_uow() as uow:
            payment = await uow.repo.payment(first.payment.payment_id)
            attempt = await uow.repo.attempt(first.attempt.attempt_id)
        if payment is None or attempt is None:
            return first
        return api.PayInvoiceResponse(
            payment=protomap.payment_pb(payment), attempt=protomap.attempt_pb(attempt)
        )

    async def RefundPayment(
        self, request: api.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> api.RefundPaymentResponse:
        v = Violations()
        v.require(request.payment_id, "payment_id")
        amount: int | None = None
        if request.HasField("amount"):
            amount = request.amount.amount_minor
            v.check(amount > 0, "amount.amount_minor", "must be positive")
            v.check(
                request.amount.currency_code == "" or is_iso4217(request.amount.currency_code),
                "amount.currency_code",
                "is not an ISO 4217 code",
            )
        v.raise_if_any()

        async def work(uow: PaymentsUnitOfWork) -> api.RefundPaymentResponse:
            payment, refund = await h.request_refund(
                uow,
                request.payment_id,
                request.org_id,
                amount,
                request.reason,
                request.credit_memo_id,
                self.collector.now(),
            )
            if request.HasField("amount") and request.amount.currency_code not in (
                "",
                payment.currency_code,
            ):
                raise FailedPrecondition(
                    message=f"payment {payment.payment_id} is in {payment.currency_code}",
                    reason="CURRENCY_MISMATCH",
                )
            return api.RefundPaymentResponse(
                refund=protomap.refund_pb(refund), payment=protomap.payment_pb(payment)
            )

        first = await self._mutate("RefundPayment", request, api.RefundPaymentResponse, work)
        await self.collector.send_refund(first.refund.refund_id)
        async with self.make_uow() as uow:
            refund = await uow.repo.refund(first.refund.refund_id)
            payment = await uow.repo.payment(first.payment.payment_id)
        if refund is None or payment is None:
            return first
        return api.RefundPaymentResponse(
            refund=protomap.refund_pb(refund), payment=protomap.payment_pb(payment)
        )

    # ------------------------------------------------------------ reads

    async def GetPayment(
        self, request: api.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> api.GetPaymentResponse:
        v = Violations()
        v.require(request.payment_id, "payment_id")
        v.raise_if_any()
        async with self.make_uow() as uow:
            payment = await h.get_payment(uow, request.payment_id, request.org_id)
        return api.GetPaymentResponse(payment=protomap.payment_pb(payment))

    async def ListPayments(
        self, request: api.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListPaymentsResponse:
        size = _size(request.page_size)
        state = protomap.PAYMENT_STATE_FROM_PB.get(request.state)
        filters = {
            "org_id": request.org_id,
            "invoice_id": request.invoice_id,
            "state": state.value if state else "",
        }
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            rows = await uow.repo.list_payments(filters, token.after if token else None, size + 1)
        return api.ListPaymentsResponse(
            payments=[protomap.payment_pb(p) for p in rows[:size]],
            next_page_token=next_page_token(
                rows, size, lambda p: [p.create_time.isoformat(), p.payment_id], filters
            ),
        )

    async def ListPaymentAttempts(
        self, request: api.ListPaymentAttemptsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListPaymentAttemptsResponse:
        v = Violations()
        v.require(request.payment_id, "payment_id")
        v.raise_if_any()
        size = _size(request.page_size)
        filters = {"payment_id": request.payment_id, "org_id": request.org_id}
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            await h.get_payment(uow, request.payment_id, request.org_id)
            rows = await uow.repo.list_attempts(
                request.payment_id, token.after if token else None, size + 1
            )
        return api.ListPaymentAttemptsResponse(
            attempts=[protomap.attempt_pb(a) for a in rows[:size]],
            next_page_token=next_page_token(rows, size, lambda a: [a.attempt_number], filters),
        )

    async def ListRefunds(
        self, request: api.ListRefundsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListRefundsResponse:
        size = _size(request.page_size)
        filters = {"org_id": request.org_id, "payment_id": request.payment_id}
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            rows = await uow.repo.list_refunds(filters, token.after if token else None, size + 1)
        return api.ListRefundsResponse(
            refunds=[protomap.refund_pb(r) for r in rows[:size]],
            next_page_token=next_page_token(
                rows, size, lambda r: [r.create_time.isoformat(), r.refund_id], filters
            ),
        )

    # ------------------------------------------------------------ sync

    async def SyncPayments(
        self, request: api.SyncPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> api.SyncPaymentsResponse:
        since = from_timestamp(request.since_time, present=request.HasField("since_time"))
        result = await self.collector.sync(since)
        response = api.SyncPaymentsResponse(
            checked_count=result.checked,
            updated_count=result.updated,
            updated_payment_ids=result.payment_ids,
            synced_until_time=to_timestamp(result.synced_until),
        )
        if self.ctx.requests.audit is not None:
            # A sync applies provider events in many transactions of their
            # own (not through run_mutation): its entry says who ran it.
            await self.ctx.requests.audit.record_apart(
                self.make_uow, "SyncPayments", request, response
            )
        return response


def registrar(
    collector_of: Callable[[ServiceContext], Collector],
    webhook_wake_of: Callable[[ServiceContext], Callable[[], None]] | None = None,
) -> Callable[[grpc.aio.Server, ServiceContext], Sequence[str]]:
    def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
        wake = webhook_wake_of(ctx) if webhook_wake_of is not None else (lambda: None)
        api_impl = PaymentsApi(ctx, collector_of(ctx), wake)
        return [add_servicer(server, api_impl, api, payments_pb2_grpc, "PaymentsService")]

    return register
