"""gRPC adapter of the subscriptions service: proto -> command -> handler -> proto.

Validation collects every bad field of a request (paths named as in the
proto) before failing once; mutations run through ``run_mutation`` so each
is one transaction with its outbox events and its AIP-155 request id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api
from tally.subscriptions.v1 import subscriptions_pb2_grpc

from services.kit.clock import Clock, SystemClock
from services.kit.errors import InvalidArgument, Violations
from services.kit.idempotency import run_mutation
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.protoconv import format_decimal, from_timestamp, parse_decimal, to_timestamp
from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext
from services.subscriptions import domain as d
from services.subscriptions import handlers as h
from services.subscriptions.protomap import (
    DIRECTION_TO_PB,
    SCHEDULE_STATE_FROM_PB,
    STATE_FROM_PB,
    closed_period_pb,
    open_period_pb,
    schedule_pb,
    subscription_pb,
)
from services.subscriptions.repository import SubscriptionsUnitOfWork
from services.subscriptions.repository.entitlement_cache import CachedEntitlements

MAX_PAGE = 500
MAX_TRIAL_DAYS = 3650
MAX_EXTERNAL_ID_LENGTH = 128
# Timestamp bounds protobuf itself accepts (0001-01-01 .. 9999-12-31).
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799

ANCHOR_FROM_PB = {
    pb.BILLING_ANCHOR_UNSPECIFIED: d.Anchor.CALENDAR,
    pb.BILLING_ANCHOR_CALENDAR: d.Anchor.CALENDAR,
    pb.BILLING_ANCHOR_ANNIVERSARY: d.Anchor.ANNIVERSARY,
}
PLAN_TIMING_FROM_PB = {
    pb.PLAN_CHANGE_TIMING_UNSPECIFIED: d.Timing.AUTOMATIC,
    pb.PLAN_CHANGE_TIMING_AUTOMATIC: d.Timing.AUTOMATIC,
    pb.PLAN_CHANGE_TIMING_IMMEDIATE: d.Timing.IMMEDIATE,
    pb.PLAN_CHANGE_TIMING_PERIOD_END: d.Timing.PERIOD_END,
}
CANCEL_TIMING_FROM_PB = {
    pb.CANCEL_TIMING_UNSPECIFIED: d.Timing.PERIOD_END,
    pb.CANCEL_TIMING_IMMEDIATE: d.Timing.IMMEDIATE,
    pb.CANCEL_TIMING_PERIOD_END: d.Timing.PERIOD_END,
}
REASON_TO_PB = {
    d.EntitlementReason.WITHIN_LIMIT: api.ENTITLEMENT_REASON_WITHIN_LIMIT,
    d.EntitlementReason.SOFT_LIMIT_EXCEEDED: api.ENTITLEMENT_REASON_SOFT_LIMIT_EXCEEDED,
    d.EntitlementReason.HARD_LIMIT_EXCEEDED: api.ENTITLEMENT_REASON_HARD_LIMIT_EXCEEDED,
    d.EntitlementReason.FEATURE_NOT_IN_PLAN: api.ENTITLEMENT_REASON_FEATURE_NOT_IN_PLAN,
    d.EntitlementReason.NO_ACTIVE_SUBSCRIPTION: api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION,
}


def _enum(v: Violations, value: int, known: dict[Any, Any], name: str) -> None:
    v.check(value in known, name, f"{value} is not a known value")


def _time(v: Violations, message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    ts: Timestamp = getattr(message, name)
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS) or not 0 <= ts.nanos < 1_000_000_000:
        v.add(name, "is not a valid timestamp")
        return None
    return from_timestamp(ts)


def _page(v: Violations, requested: int) -> int:
    if requested < 0:
        v.add("page_size", "must not be negative")
        return 1
    return page_size(requested, maximum=MAX_PAGE)


def _token(v: Violations, token: str, filters: dict[str, Any], width: int) -> list[Any] | None:
    try:
        decoded = PageToken.decode(token, filters)
    except InvalidArgument as exc:  # gathered with the request's other violations
        for item in exc.violations:
            v.add(item.field, item.description)
        return None
    if decoded is None:
        return None
    # Keyset tokens here are [instant, id] or [instant]; anything else was not ours.
    try:
        if len(decoded.after) != width:
            raise ValueError
        datetime.fromisoformat(str(decoded.after[0]))
    except ValueError:
        v.add("page_token", "is not a token this API issued")
        return None
    return decoded.after


class SubscriptionsApi(subscriptions_pb2_grpc.SubscriptionsServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        ctx: ServiceContext,
        uow_factory: Callable[[], SubscriptionsUnitOfWork],
        entitlements: CachedEntitlements,
        clock: Clock | None = None,
    ) -> None:
        self.ctx = ctx
        self.uow = uow_factory
        self.entitlements = entitlements
        self.clock: Clock = clock or SystemClock()

    # ---------------------------------------------------------------- create

    async def CreateSubscription(
        self, request: api.CreateSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.CreateSubscriptionResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.package_id, "package_id")
        trial = request.trial_days if request.HasField("trial_days") else None
        if trial is not None:
            v.check(0 <= trial <= MAX_TRIAL_DAYS, "trial_days", f"must be 0..{MAX_TRIAL_DAYS}")
        _enum(v, request.billing_anchor, ANCHOR_FROM_PB, "billing_anchor")
        start = _time(v, request, "start_time")
        if start is not None:
            v.check(start <= self.clock.now(), "start_time", "must not be in the future")
        external_id = request.external_id
        v.check(
            external_id == external_id.strip()
            and len(external_id) <= MAX_EXTERNAL_ID_LENGTH
            and external_id.isprintable(),
            "external_id",
            f"must be at most {MAX_EXTERNAL_ID_LENGTH} printable characters,"
            " without leading or trailing whitespace",
        )
        v.raise_if_any()
        cmd = h.CreateSubscription(
            org_id=request.org_id,
            package_id=request.package_id,
            package_version_id=request.package_version_id,
            trial_days=trial,
            anchor=ANCHOR_FROM_PB[request.billing_anchor],
            start_time=start,
            allow_multiple=request.allow_multiple,
            external_id=external_id,
        )

        async def work(uow: SubscriptionsUnitOfWork) -> api.CreateSubscriptionResponse:
            sub = await h.create_subscription(uow, cmd, self.clock)
            return api.CreateSubscriptionResponse(subscription=subscription_pb(sub))

        return await run_mutation(
            self.uow,
            self.ctx.requests,
            "CreateSubscription",
            request,
            api.CreateSubscriptionResponse,
            work,
        )

    # ---------------------------------------------------------------- reads

    async def GetSubscription(
        self, request: api.GetSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.GetSubscriptionResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        v.raise_if_any()
        async with self.uow() as uow:
            sub = await h.get_subscription(uow, request.subscription_id, request.org_id)
        return api.GetSubscriptionResponse(subscription=subscription_pb(sub))

    async def ListSubscriptions(
        self, request: api.ListSubscriptionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ListSubscriptionsResponse:
        v = Violations()
        size = _page(v, request.page_size)
        states: dict[Any, d.State | None] = {0: None, **STATE_FROM_PB}
        _enum(v, request.state, states, "state")
        filters = {"org": request.org_id, "state": request.state, "pkg": request.package_id}
        after = _token(v, request.page_token, filters, 2)
        v.raise_if_any()
        async with self.uow() as uow:
            subs = await h.list_subscriptions(
                uow,
                org_id=request.org_id,
                state=states[request.state],
                package_id=request.package_id,
                after=after,
                limit=size + 1,
            )
        token = next_page_token(
            subs, size, lambda s: [s.create_time.isoformat(), s.subscription_id], filters
        )
        return api.ListSubscriptionsResponse(
            subscriptions=[subscription_pb(s) for s in subs[:size]], next_page_token=token
        )

    # ---------------------------------------------------------------- lifecycle

    async def ChangePlan(
        self, request: api.ChangePlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ChangePlanResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        if not request.package_id and not request.package_version_id:
            v.add("package_id", "package_id or package_version_id is required")
        _enum(v, request.timing, PLAN_TIMING_FROM_PB, "timing")
        v.raise_if_any()
        cmd = h.ChangePlan(
            subscription_id=request.subscription_id,
            org_id=request.org_id,
            package_id=request.package_id,
            package_version_id=request.package_version_id,
            timing=PLAN_TIMING_FROM_PB[request.timing],
        )

        def answer(out: h.ChangeOutcome) -> api.ChangePlanResponse:
            return api.ChangePlanResponse(
                subscription=subscription_pb(out.subscription),
                direction=DIRECTION_TO_PB[out.direction],
                effective_time=to_timestamp(out.effective_time),
                schedule=schedule_pb(out.schedule) if out.schedule else None,
                previous_package_version_id=out.previous_package_version_id,
            )

        if request.validate_only:
            # A read: a unit of work never committed, no request id recorded.
            async with self.uow() as uow:
                return answer(await h.change_plan(uow, cmd, self.clock, validate_only=True))

        async def work(uow: SubscriptionsUnitOfWork) -> api.ChangePlanResponse:
            return answer(await h.change_plan(uow, cmd, self.clock))

        return await run_mutation(
            self.uow, self.ctx.requests, "ChangePlan", request, api.ChangePlanResponse, work
        )

    async def CancelSubscription(
        self, request: api.CancelSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.CancelSubscriptionResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        _enum(v, request.timing, CANCEL_TIMING_FROM_PB, "timing")
        v.check(len(request.reason) <= 1000, "reason", "must be at most 1000 characters")
        v.raise_if_any()
        cmd = h.CancelSubscription(
            subscription_id=request.subscription_id,
            org_id=request.org_id,
            timing=CANCEL_TIMING_FROM_PB[request.timing],
            reason=request.reason,
        )

        async def work(uow: SubscriptionsUnitOfWork) -> api.CancelSubscriptionResponse:
            sub, effective = await h.cancel_subscription(uow, cmd, self.clock)
            return api.CancelSubscriptionResponse(
                subscription=subscription_pb(sub), effective_time=to_timestamp(effective)
            )

        return await run_mutation(
            self.uow,
            self.ctx.requests,
            "CancelSubscription",
            request,
            api.CancelSubscriptionResponse,
            work,
        )

    async def PauseSubscription(
        self, request: api.PauseSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.PauseSubscriptionResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        v.raise_if_any()
        cmd = h.PauseOrResume(request.subscription_id, request.org_id)

        async def work(uow: SubscriptionsUnitOfWork) -> api.PauseSubscriptionResponse:
            sub = await h.pause_subscription(uow, cmd, self.clock)
            return api.PauseSubscriptionResponse(subscription=subscription_pb(sub))

        return await run_mutation(
            self.uow,
            self.ctx.requests,
            "PauseSubscription",
            request,
            api.PauseSubscriptionResponse,
            work,
        )

    async def ResumeSubscription(
        self, request: api.ResumeSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ResumeSubscriptionResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        v.raise_if_any()
        cmd = h.PauseOrResume(request.subscription_id, request.org_id)

        async def work(uow: SubscriptionsUnitOfWork) -> api.ResumeSubscriptionResponse:
            sub = await h.resume_subscription(uow, cmd, self.clock)
            return api.ResumeSubscriptionResponse(subscription=subscription_pb(sub))

        return await run_mutation(
            self.uow,
            self.ctx.requests,
            "ResumeSubscription",
            request,
            api.ResumeSubscriptionResponse,
            work,
        )

    # ---------------------------------------------------------------- schedules

    async def ListSchedules(
        self, request: api.ListSchedulesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ListSchedulesResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        size = _page(v, request.page_size)
        states: dict[Any, d.ScheduleState | None] = {0: None, **SCHEDULE_STATE_FROM_PB}
        _enum(v, request.state, states, "state")
        filters = {"sub": request.subscription_id, "state": request.state}
        after = _token(v, request.page_token, filters, 2)
        v.raise_if_any()
        async with self.uow() as uow:
            entries = await h.list_schedules(
                uow,
                subscription_id=request.subscription_id,
                org_id=request.org_id,
                state=states[request.state],
                after=after,
                limit=size + 1,
            )
        token = next_page_token(
            entries, size, lambda e: [e.effective_time.isoformat(), e.schedule_id], filters
        )
        return api.ListSchedulesResponse(
            schedules=[schedule_pb(e) for e in entries[:size]], next_page_token=token
        )

    async def CancelSchedule(
        self, request: api.CancelScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.CancelScheduleResponse:
        v = Violations()
        v.require(request.schedule_id, "schedule_id")
        v.raise_if_any()
        cmd = h.CancelSchedule(request.schedule_id, request.org_id)

        async def work(uow: SubscriptionsUnitOfWork) -> api.CancelScheduleResponse:
            entry, sub = await h.cancel_schedule(uow, cmd, self.clock)
            return api.CancelScheduleResponse(
                schedule=schedule_pb(entry), subscription=subscription_pb(sub)
            )

        return await run_mutation(
            self.uow, self.ctx.requests, "CancelSchedule", request, api.CancelScheduleResponse, work
        )

    # ---------------------------------------------------------------- periods

    async def ListBillingPeriods(
        self, request: api.ListBillingPeriodsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ListBillingPeriodsResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        size = _page(v, request.page_size)
        filters = {"sub": request.subscription_id}
        after = _token(v, request.page_token, filters, 1)
        before = datetime.fromisoformat(str(after[0])) if after else None
        v.raise_if_any()
        async with self.uow() as uow:
            page = await h.list_billing_periods(
                uow,
                subscription_id=request.subscription_id,
                org_id=request.org_id,
                before=before,
                limit=size,
            )
        periods = [open_period_pb(page.open_period, page.plans)] if page.open_period else []
        periods += [closed_period_pb(p, page.plans) for p in page.closed]
        token = PageToken(page.next_after).encode(filters) if page.next_after else ""
        return api.ListBillingPeriodsResponse(periods=periods, next_page_token=token)

    async def ClosePeriods(
        self, request: api.ClosePeriodsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ClosePeriodsResponse:
        v = Violations()
        now = _time(v, request, "now")
        v.check(request.max_periods >= 0, "max_periods", "must not be negative")
        v.raise_if_any()
        cmd = h.ClosePeriods(now=now, max_periods=request.max_periods or None)

        async def work(uow: SubscriptionsUnitOfWork) -> api.ClosePeriodsResponse:
            out = await h.close_periods(uow, cmd, self.clock)
            return api.ClosePeriodsResponse(
                closed_periods=[closed_period_pb(p, out.plans) for p in out.closed],
                trials_ended=out.trials_ended,
                schedules_applied=out.schedules_applied,
                more_due=out.more_due,
            )

        return await run_mutation(
            self.uow, self.ctx.requests, "ClosePeriods", request, api.ClosePeriodsResponse, work
        )

    # ---------------------------------------------------------------- entitlements

    async def CheckEntitlement(
        self, request: api.CheckEntitlementRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.CheckEntitlementResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.feature_key, "feature_key")
        quantity = parse_decimal(request.quantity, "quantity", v, required=False)
        v.raise_if_any()
        cmd = h.CheckEntitlement(request.org_id, request.feature_key, quantity)
        out = await h.check_entitlement(self.entitlements.read, cmd)
        dec = out.decision

        def text(value: Any) -> str:
            return format_decimal(value) if value is not None else ""

        enforcement = catalog_pb2.LIMIT_ENFORCEMENT_UNSPECIFIED
        if dec.hard is not None:
            hard, soft = catalog_pb2.LIMIT_ENFORCEMENT_HARD, catalog_pb2.LIMIT_ENFORCEMENT_SOFT
            enforcement = hard if dec.hard else soft
        return api.CheckEntitlementResponse(
            allowed=dec.allowed,
            reason=REASON_TO_PB[dec.reason],
            unlimited=dec.unlimited,
            limit=text(dec.limit),
            used=text(dec.used),
            remaining=text(dec.remaining),
            enforcement=enforcement,
            subscription_id=out.subscription_id,
        )


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    from services.subscriptions.bootstrap import entitlement_cache_for, uow_factory

    return [
        add_servicer(
            server,
            SubscriptionsApi(
                ctx,
                uow_factory(ctx),
                CachedEntitlements(uow_factory(ctx), entitlement_cache_for(ctx)),
            ),
            api,
            subscriptions_pb2_grpc,
            "SubscriptionsService",
        )
    ]
