"""gRPC adapter of the invoicing service: proto -> validated command ->
handler (in ``run_mutation`` for mutations) -> proto. Errors are mapped by the
kit's interceptor. PreviewCharge belongs to the rating engine (rating/wire.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.api import httpbody_pb2
from google.protobuf.message import Message
from tally.invoicing.v1 import invoicing_pb2 as api
from tally.invoicing.v1 import invoicing_pb2_grpc
from tally.invoicing.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb2
from tally.subscriptions.v1 import subscriptions_pb2 as subs_api

from services.invoicing import domain as d
from services.invoicing import handlers as h
from services.invoicing import protomap
from services.invoicing.rating.wire import preview_charge
from services.invoicing.render import DocumentFormat, pdf_fonts, render_document
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.settings import Policy, invoicing_settings, policy
from services.invoicing.subscriptions_client import shared_client
from services.invoicing.usage_client import shared_reader
from services.kit.clock import Clock, SystemClock
from services.kit.currency import is_iso4217
from services.kit.errors import InvalidArgument, NotFound, Violations
from services.kit.idempotency import run_mutation
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.protoconv import from_timestamp, parse_decimal
from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext

R = TypeVar("R", bound=Message)
PROFILE_FIELDS = ("legal_name", "address", "tax_id", "invoice_email")
DOCUMENT_FORMATS = {
    api.DOCUMENT_FORMAT_UNSPECIFIED: DocumentFormat.HTML,
    api.DOCUMENT_FORMAT_HTML: DocumentFormat.HTML,
    api.DOCUMENT_FORMAT_PDF: DocumentFormat.PDF,
}


class InvoicingApi(invoicing_pb2_grpc.InvoicingServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        ctx: ServiceContext,
        make_uow: Callable[[], InvoicingUnitOfWork] | None = None,
        usage: h.UsageSource | None = None,
        the_policy: Policy | None = None,
        clock: Clock | None = None,
        subscriptions: h.PlanChangeChecker | None = None,
    ) -> None:
        self.ctx = ctx
        settings = invoicing_settings()
        self.make_uow: Callable[[], InvoicingUnitOfWork] = make_uow or (
            lambda: InvoicingUnitOfWork(ctx.database, ctx.outbox, ctx.relay.wake)
        )
        self.usage = usage or shared_reader(settings.usage_addr, settings.usage_deadline_seconds)
        self.policy = the_policy or policy(settings)
        self.clock: Clock = clock or SystemClock()
        self.subscriptions = subscriptions or shared_client(
            settings.subscriptions_addr, settings.subscriptions_deadline_seconds
        )
        self.pdf_fonts = pdf_fonts(settings.pdf_font_file, settings.pdf_bold_font_file)

    async def PreviewCharge(
        self, request: api.PreviewChargeRequest, context: grpc.aio.ServicerContext
    ) -> api.PreviewChargeResponse:
        # Pure computation: no unit of work, nothing stored (services/invoicing/rating).
        return preview_charge(request)

    def _now(self) -> datetime:
        return self.clock.now().astimezone(UTC)

    async def _mutate(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        work: Callable[[InvoicingUnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_mutation(
            self.make_uow, self.ctx.requests, method, request, response_type, work
        )

    # ------------------------------------------------------------ reads

    async def GetInvoice(
        self, request: api.GetInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> api.GetInvoiceResponse:
        v = Violations()
        v.require(request.invoice_id, "invoice_id")
        v.raise_if_any()
        async with self.make_uow() as uow:
            inv = await h.get_invoice(uow, request.invoice_id, request.org_id)
        return api.GetInvoiceResponse(invoice=protomap.invoice_pb(inv))

    async def ListInvoices(
        self, request: api.ListInvoicesRequest, context: grpc.aio.ServicerContext
    ) -> api.ListInvoicesResponse:
        size = page_size(request.page_size)
        filters = {
            "org_id": request.org_id,
            "subscription_id": request.subscription_id,
            "state": protomap.STATE_FROM_PB[request.state].value
            if request.state in protomap.STATE_FROM_PB
            else "",
        }
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            rows = await uow.repo.list_invoices(filters, token.after if token else None, size + 1)
        return api.ListInvoicesResponse(
            invoices=[protomap.invoice_pb(i, lines=not request.omit_lines) for i in rows[:size]],
            next_page_token=next_page_token(
                rows, size, lambda i: [i.create_time.isoformat(), i.invoice_id], filters
            ),
        )

    async def RenderInvoice(
        self, request: api.RenderInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> api.RenderInvoiceResponse:
        v = Violations()
        v.require(request.invoice_id, "invoice_id")
        v.check(request.format in DOCUMENT_FORMATS, "format", "must be HTML or PDF")
        v.raise_if_any()
        fmt = DOCUMENT_FORMATS[request.format]
        document = await self._render(request.invoice_id, request.org_id, fmt, context)
        return api.RenderInvoiceResponse(document=document)

    async def RenderInvoicePdf(
        self, request: api.RenderInvoicePdfRequest, context: grpc.aio.ServicerContext
    ) -> api.RenderInvoicePdfResponse:
        v = Violations()
        v.require(request.invoice_id, "invoice_id")
        v.raise_if_any()
        document = await self._render(
            request.invoice_id, request.org_id, DocumentFormat.PDF, context
        )
        return api.RenderInvoicePdfResponse(document=document)

    async def _render(
        self,
        invoice_id: str,
        org_id: str,
        fmt: DocumentFormat,
        context: grpc.aio.ServicerContext,
    ) -> httpbody_pb2.HttpBody:
        async with self.make_uow() as uow:
            inv = await h.get_invoice(uow, invoice_id, org_id)
        # A PDF takes milliseconds of CPU: laid out off the event loop, so
        # other calls and the consumers are not held up behind it.
        doc = await asyncio.to_thread(render_document, inv, fmt, self.pdf_fonts)
        # HttpBody has no headers; the gateway forwards this one to HTTP.
        await context.send_initial_metadata(
            (("content-disposition", f'inline; filename="{doc.filename}"'),)
        )
        return httpbody_pb2.HttpBody(content_type=doc.content_type, data=doc.data)

    async def PreviewInvoice(
        self, request: api.PreviewInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> api.PreviewInvoiceResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.raise_if_any()
        async with self.make_uow() as uow:
            inv = await h.preview(
                uow, self.usage, request.org_id, request.subscription_id, self._now()
            )
        return api.PreviewInvoiceResponse(invoice=protomap.invoice_pb(inv))

    async def PreviewPlanChange(
        self, request: api.PreviewPlanChangeRequest, context: grpc.aio.ServicerContext
    ) -> api.PreviewPlanChangeResponse:
        # No checks of its own: ChangePlan's validation answers (the same
        # field names), so a quote is refused exactly as the change would be.
        # Asked before the unit of work: no connection waits on another service.
        checked = await self.subscriptions.validate_change(
            subs_api.ChangePlanRequest(
                subscription_id=request.subscription_id,
                org_id=request.org_id,
                package_id=request.package_id,
                package_version_id=request.package_version_id,
                timing=request.timing,
            )
        )
        async with self.make_uow() as uow:
            quote = await h.quote_plan_change(uow, self.usage, checked, self._now())
        return api.PreviewPlanChangeResponse(
            direction=checked.direction,
            timing=subs_pb2.PLAN_CHANGE_TIMING_IMMEDIATE
            if quote.immediate
            else subs_pb2.PLAN_CHANGE_TIMING_PERIOD_END,
            effective_time=checked.effective_time,
            previous_package_version_id=quote.previous_version_id,
            package_version_id=quote.version_id,
            due_now=protomap.invoice_pb(quote.due_now) if quote.due_now else None,
            next_invoice=protomap.invoice_pb(quote.next_invoice),
        )

    async def GetCreditMemo(
        self, request: api.GetCreditMemoRequest, context: grpc.aio.ServicerContext
    ) -> api.GetCreditMemoResponse:
        v = Violations()
        v.require(request.credit_memo_id, "credit_memo_id")
        v.raise_if_any()
        async with self.make_uow() as uow:
            row = await uow.repo.memo(request.credit_memo_id)
        if row is None or (request.org_id and row.org_id != request.org_id):
            raise NotFound(
                message=f"credit memo {request.credit_memo_id} not found",
                reason="CREDIT_MEMO_NOT_FOUND",
            )
        return api.GetCreditMemoResponse(credit_memo=protomap.memo_pb(row))

    async def ListCreditMemos(
        self, request: api.ListCreditMemosRequest, context: grpc.aio.ServicerContext
    ) -> api.ListCreditMemosResponse:
        size = page_size(request.page_size)
        filters = {"org_id": request.org_id, "invoice_id": request.invoice_id}
        token = PageToken.decode(request.page_token, filters)
        async with self.make_uow() as uow:
            rows = await uow.repo.list_memos(filters, token.after if token else None, size + 1)
        return api.ListCreditMemosResponse(
            credit_memos=[protomap.memo_pb(r) for r in rows[:size]],
            next_page_token=next_page_token(
                rows, size, lambda r: [r.create_time.isoformat(), r.credit_memo_id], filters
            ),
        )

    async def GetCreditBalance(
        self, request: api.GetCreditBalanceRequest, context: grpc.aio.ServicerContext
    ) -> api.GetCreditBalanceResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        currency = request.currency_code or "USD"
        v.check(is_iso4217(currency), "currency_code", "is not an ISO 4217 code")
        v.raise_if_any()
        async with self.make_uow() as uow:
            balance, updated = await h.credit_balance(uow, request.org_id, currency)
        return api.GetCreditBalanceResponse(
            credit_balance=pb.CreditBalance(
                org_id=request.org_id,
                currency_code=currency,
                balance=protomap.money(balance, currency),
                update_time=protomap.ts(updated),
            )
        )

    async def GetBillingProfile(
        self, request: api.GetBillingProfileRequest, context: grpc.aio.ServicerContext
    ) -> api.GetBillingProfileResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.raise_if_any()
        async with self.make_uow() as uow:
            row = await uow.repo.profile(request.org_id)
        if row is None:
            return api.GetBillingProfileResponse(
                billing_profile=pb.BillingProfile(org_id=request.org_id, tax_rate="0")
            )
        return api.GetBillingProfileResponse(
            billing_profile=protomap.profile_pb(protomap.profile_dict(row), row)
        )

    # ------------------------------------------------------------ mutations

    def _invoice_id(self, request: Any) -> None:
        v = Violations()
        v.require(request.invoice_id, "invoice_id")
        v.raise_if_any()

    async def FinalizeInvoice(
        self, request: api.FinalizeInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> api.FinalizeInvoiceResponse:
        self._invoice_id(request)

        async def work(uow: InvoicingUnitOfWork) -> api.FinalizeInvoiceResponse:
            inv = await h.finalize(uow, request.invoice_id, self._now(), self.policy)
            return api.FinalizeInvoiceResponse(invoice=protomap.invoice_pb(inv))

        return await self._mutate("FinalizeInvoice", request, api.FinalizeInvoiceResponse, work)

    async def VoidInvoice(
        self, request: api.VoidInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> api.VoidInvoiceResponse:
        self._invoice_id(request)

        async def work(uow: InvoicingUnitOfWork) -> api.VoidInvoiceResponse:
            inv = await h.void(uow, request.invoice_id, request.reason, self._now())
            return api.VoidInvoiceResponse(invoice=protomap.invoice_pb(inv))

        return await self._mutate("VoidInvoice", request, api.VoidInvoiceResponse, work)

    async def MarkInvoiceUncollectible(
        self, request: api.MarkInvoiceUncollectibleRequest, context: grpc.aio.ServicerContext
    ) -> api.MarkInvoiceUncollectibleResponse:
        self._invoice_id(request)

        async def work(uow: InvoicingUnitOfWork) -> api.MarkInvoiceUncollectibleResponse:
            inv = await h.mark_uncollectible(uow, request.invoice_id, request.reason, self._now())
            return api.MarkInvoiceUncollectibleResponse(invoice=protomap.invoice_pb(inv))

        return await self._mutate(
            "MarkInvoiceUncollectible", request, api.MarkInvoiceUncollectibleResponse, work
        )

    async def CreateInvoiceAdjustment(
        self, request: api.CreateInvoiceAdjustmentRequest, context: grpc.aio.ServicerContext
    ) -> api.CreateInvoiceAdjustmentResponse:
        v = Violations()
        v.require(request.invoice_id, "invoice_id")
        v.require(request.description.strip(), "description")
        v.check(request.HasField("amount"), "amount", "is required")
        v.check(request.amount.amount_minor != 0, "amount.amount_minor", "must not be zero")
        v.raise_if_any()

        async def work(uow: InvoicingUnitOfWork) -> api.CreateInvoiceAdjustmentResponse:
            inv = await h.add_adjustment(
                uow,
                request.invoice_id,
                request.description.strip(),
                request.amount.amount_minor,
                request.amount.currency_code,
                self._now(),
            )
            return api.CreateInvoiceAdjustmentResponse(invoice=protomap.invoice_pb(inv))

        return await self._mutate(
            "CreateInvoiceAdjustment", request, api.CreateInvoiceAdjustmentResponse, work
        )

    async def IssueCreditMemo(
        self, request: api.IssueCreditMemoRequest, context: grpc.aio.ServicerContext
    ) -> api.IssueCreditMemoResponse:
        v = Violations()
        v.require(request.invoice_id, "invoice_id")
        v.check(len(request.lines) > 0, "lines", "at least one line is required")
        lines: list[h.MemoLine] = []
        for i, li in enumerate(request.lines):
            if v.check(
                li.amount.amount_minor > 0, f"lines[{i}].amount.amount_minor", "must be positive"
            ):
                lines.append(h.MemoLine(li.invoice_line_id, li.description, li.amount.amount_minor))
        v.check(request.reason in pb.CreditMemoReason.values(), "reason", "is not a known reason")
        v.check(
            request.settlement == pb.CREDIT_MEMO_SETTLEMENT_UNSPECIFIED
            or request.settlement in protomap.SETTLEMENT_FROM_PB,
            "settlement",
            "is not a known settlement",
        )
        v.raise_if_any()
        settlement = protomap.SETTLEMENT_FROM_PB.get(request.settlement)
        currencies = {li.amount.currency_code for li in request.lines}

        async def work(uow: InvoicingUnitOfWork) -> api.IssueCreditMemoResponse:
            inv = await h.get_invoice(uow, request.invoice_id)
            bad = currencies - {inv.currency_code, ""}
            if bad:
                raise InvalidArgument.field(
                    "lines.amount.currency_code",
                    f"must be the invoice's currency {inv.currency_code}",
                )
            values, inv = await h.issue_credit_memo(
                uow,
                request.invoice_id,
                lines,
                request.reason,
                request.memo,
                settlement,
                self._now(),
            )
            return api.IssueCreditMemoResponse(
                credit_memo=protomap.memo_pb(values), invoice=protomap.invoice_pb(inv)
            )

        return await self._mutate("IssueCreditMemo", request, api.IssueCreditMemoResponse, work)

    async def RunBilling(
        self, request: api.RunBillingRequest, context: grpc.aio.ServicerContext
    ) -> api.RunBillingResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.subscription_id, "subscription_id")
        v.check(request.HasField("period_start_time"), "period_start_time", "is required")
        v.raise_if_any()
        start = from_timestamp(request.period_start_time)
        assert start is not None

        async def work(uow: InvoicingUnitOfWork) -> api.RunBillingResponse:
            inv, created = await h.run_billing(
                uow,
                self.usage,
                self.policy,
                request.org_id,
                request.subscription_id,
                start,
                self._now(),
            )
            return api.RunBillingResponse(invoice=protomap.invoice_pb(inv), created=created)

        return await self._mutate("RunBilling", request, api.RunBillingResponse, work)

    async def UpdateBillingProfile(
        self, request: api.UpdateBillingProfileRequest, context: grpc.aio.ServicerContext
    ) -> api.UpdateBillingProfileResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        paths = list(request.update_mask.paths) or list(PROFILE_FIELDS)
        for i, path in enumerate(paths):
            top = path.split(".")[0]
            v.check(
                top in PROFILE_FIELDS,
                f"update_mask.paths[{i}]",
                f"{path!r} cannot be updated (tax_rate through SetTaxRate)",
            )
        country = request.billing_profile.address.country_code
        v.check(
            not country or (len(country) == 2 and country.isalpha() and country.isupper()),
            "billing_profile.address.country_code",
            "must be an ISO 3166-1 alpha-2 code",
        )
        email = request.billing_profile.invoice_email
        v.check(
            not email or "@" in email, "billing_profile.invoice_email", "is not an email address"
        )
        v.raise_if_any()
        bp = request.billing_profile
        changes: dict[str, Any] = {}
        for path in {p.split(".")[0] for p in paths}:
            if path == "address":
                a = bp.address
                changes["address"] = {
                    f: getattr(a, f)
                    for f in ("line1", "line2", "city", "region", "postal_code", "country_code")
                    if getattr(a, f)
                }
            else:
                changes[path] = getattr(bp, path)

        async def work(uow: InvoicingUnitOfWork) -> api.UpdateBillingProfileResponse:
            row = await h.update_profile(uow, request.org_id, changes, self._now())
            return api.UpdateBillingProfileResponse(
                billing_profile=protomap.profile_pb(protomap.profile_dict(row), row)
            )

        return await self._mutate(
            "UpdateBillingProfile", request, api.UpdateBillingProfileResponse, work
        )

    async def SetTaxRate(
        self, request: api.SetTaxRateRequest, context: grpc.aio.ServicerContext
    ) -> api.SetTaxRateResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        rate = parse_decimal(request.tax_rate, "tax_rate", v, max_places=4)
        if rate is not None:
            v.check(rate <= Decimal(100), "tax_rate", "must be between 0 and 100")
        v.raise_if_any()
        assert rate is not None

        async def work(uow: InvoicingUnitOfWork) -> api.SetTaxRateResponse:
            row = await h.update_profile(uow, request.org_id, {"tax_rate": rate}, self._now())
            return api.SetTaxRateResponse(
                billing_profile=protomap.profile_pb(protomap.profile_dict(row), row)
            )

        return await self._mutate("SetTaxRate", request, api.SetTaxRateResponse, work)


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    return [add_servicer(server, InvoicingApi(ctx), api, invoicing_pb2_grpc, "InvoicingService")]


__all__ = ["InvoicingApi", "d", "register"]
