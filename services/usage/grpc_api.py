"""gRPC adapter of the usage service: proto -> handler -> proto, nothing more.

Ingestion runs one transaction per batch through ``ingestor.Ingestor``
(handlers never commit), retried whole on a deadlock or serialization failure.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncSession
from tally.usage.v1 import resources_pb2, usage_pb2, usage_pb2_grpc

from services.kit.clock import Clock, SystemClock
from services.kit.errors import InvalidArgument, Violations
from services.kit.idempotency import run_mutation
from services.kit.protoconv import format_decimal, to_timestamp
from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext
from services.kit.uow import UnitOfWork
from services.usage.domain import MAX_BATCH
from services.usage.domain.apikeys import ApiKey
from services.usage.handlers import apikeys, backfill, queries, rejections
from services.usage.handlers.ingest import (
    DEFAULT_COPY_THRESHOLD,
    BatchOutcome,
    EventResult,
    EventStatus,
    record_usage,
    report_outcome,
)
from services.usage.ingestor import MAX_ATTEMPTS, Ingestor, retryable
from services.usage.protomap import (
    AGGREGATION_TO_PROTO,
    REASON_FROM_PROTO,
    REASON_TO_PROTO,
    aggregate_message,
    aggregate_request,
    incoming_events,
    rejected_message,
    timestamp_or_none,
)
from services.usage.repository.queries import EventFilter
from services.usage.repository.rejections import RejectionFilter
from services.usage.tracelinks import link_last_ingestion

log = logging.getLogger(__name__)

_STATUS = {
    EventStatus.ACCEPTED: resources_pb2.USAGE_EVENT_STATUS_ACCEPTED,
    EventStatus.DUPLICATE: resources_pb2.USAGE_EVENT_STATUS_DUPLICATE,
    EventStatus.REJECTED: resources_pb2.USAGE_EVENT_STATUS_REJECTED,
}


def _result_message(r: EventResult) -> resources_pb2.UsageEventResult:
    return resources_pb2.UsageEventResult(
        index=r.index,
        idempotency_key=r.idempotency_key,
        status=_STATUS[r.status],
        reason=REASON_TO_PROTO[r.reason] if r.reason else None,
        message=r.message,
    )


# Like AIP-231's usual bound; invoicing asks for a consumer group's charges.
MAX_BATCH_GET = 1000


def _check_batch_size(count: int, field: str) -> None:
    if count == 0:
        raise InvalidArgument.field(field, "needs at least one event")
    if count > MAX_BATCH:
        raise InvalidArgument.field(
            field, f"has {count} events; at most {MAX_BATCH} per batch", reason="BATCH_TOO_LARGE"
        )


class UsageApi(usage_pb2_grpc.UsageServiceServicer):  # type: ignore[misc]
    def __init__(
        self, ctx: ServiceContext, clock: Clock, copy_threshold: int = DEFAULT_COPY_THRESHOLD
    ) -> None:
        self.ctx = ctx
        self.clock = clock
        self.ingestor = Ingestor(ctx.unit_of_work, clock, copy_threshold)

    def _session(self) -> AsyncSession:
        return self.ctx.database.sessions()

    async def _batch(
        self, request: Any, events: Sequence[Any], method: str, *, omit_accepted: bool = False
    ) -> usage_pb2.RecordUsageBatchResponse:
        if not request.request_id:
            return _batch_response(await self.ingestor.ingest(events), omit_accepted)
        # With an AIP-155 request id, a retry answers what the first call did:
        # the stored answer itself, which may omit accepted results.
        holder: list[BatchOutcome] = []

        async def work(uow: UnitOfWork) -> usage_pb2.RecordUsageBatchResponse:
            outcome = await record_usage(
                uow,
                incoming_events(events),
                now=self.clock.now(),
                copy_threshold=self.ingestor.copy_threshold,
            )
            holder[:] = [outcome]
            return _batch_response(outcome, omit_accepted)

        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await run_mutation(
                    self.ctx.unit_of_work,
                    self.ctx.requests,
                    method,
                    request,
                    usage_pb2.RecordUsageBatchResponse,
                    work,
                    # Usage events are data on the hot path, not changes of
                    # state anyone decided: no audit entry per batch.
                    audited=False,
                )
                break
            except Exception as exc:
                if attempt == MAX_ATTEMPTS or not retryable(exc):
                    raise
        if holder:  # drops of a replayed answer were reported the first time
            report_outcome(holder[0])
        return response

    async def RecordUsage(
        self, request: usage_pb2.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.RecordUsageResponse:
        if not request.HasField("event"):
            raise InvalidArgument.field("event", "is required")
        response = await self._batch(request, [request.event], "RecordUsage")
        return usage_pb2.RecordUsageResponse(result=response.results[0])

    async def RecordUsageBatch(
        self, request: usage_pb2.RecordUsageBatchRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.RecordUsageBatchResponse:
        _check_batch_size(len(request.events), "events")
        return await self._batch(
            request,
            request.events,
            "RecordUsageBatch",
            omit_accepted=request.omit_accepted_results,
        )

    async def StreamUsage(
        self,
        request_iterator: AsyncIterator[usage_pb2.StreamUsageRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[usage_pb2.StreamUsageResponse]:
        # Each batch is stored in its own transaction and acknowledged right
        # after it commits, so an ack always means "durable"; a reconnecting
        # client resends from acked_sequence + 1.
        last = 0
        totals = [0, 0, 0]
        async for request in request_iterator:
            if request.sequence <= last:
                raise InvalidArgument.field(
                    "sequence",
                    f"must increase within a stream: got {request.sequence} after {last}",
                    reason="SEQUENCE_NOT_INCREASING",
                )
            if len(request.events) > MAX_BATCH:
                _check_batch_size(len(request.events), "events")
            outcome = (
                await self.ingestor.ingest(request.events) if request.events else BatchOutcome([])
            )
            last = request.sequence
            totals[0] += outcome.accepted
            totals[1] += outcome.duplicates
            totals[2] += outcome.rejected
            yield usage_pb2.StreamUsageResponse(
                acked_sequence=last,
                batches=[
                    usage_pb2.StreamBatchResult(
                        sequence=last,
                        accepted_count=outcome.accepted,
                        duplicate_count=outcome.duplicates,
                        rejected_count=outcome.rejected,
                        problems=_problems(outcome),
                    )
                ],
                total_accepted_count=totals[0],
                total_duplicate_count=totals[1],
                total_rejected_count=totals[2],
            )

    async def QueryUsage(
        self, request: usage_pb2.QueryUsageRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.QueryUsageResponse:
        async with self._session() as session:
            aggregation, buckets = await queries.query_usage(
                session,
                org_id=request.org_id,
                metric_code=request.metric_code,
                start=timestamp_or_none(request, "start_time"),
                end=timestamp_or_none(request, "end_time"),
                hourly=request.bucket == resources_pb2.TIME_BUCKET_HOUR,
                subscription_id=request.subscription_id,
            )
        return usage_pb2.QueryUsageResponse(
            aggregation=AGGREGATION_TO_PROTO[aggregation],
            buckets=[
                resources_pb2.UsageBucket(
                    start_time=to_timestamp(b.start),
                    end_time=to_timestamp(b.end),
                    value=format_decimal(b.value),
                    event_count=b.event_count,
                )
                for b in buckets
            ],
        )

    async def GetAggregate(
        self, request: usage_pb2.GetAggregateRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.GetAggregateResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        v.require(request.metric_code, "metric_code")
        v.raise_if_any()
        async with self._session() as session:
            view, values = await queries.get_aggregate(session, aggregate_request(request))
        link_last_ingestion(view.subscription_id, view.metric_code, view.period_start)
        return usage_pb2.GetAggregateResponse(
            aggregate=aggregate_message(view), event_values=[format_decimal(v) for v in values]
        )

    async def BatchGetAggregates(
        self, request: usage_pb2.BatchGetAggregatesRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.BatchGetAggregatesResponse:
        items = request.requests
        if len(items) > MAX_BATCH_GET:
            raise InvalidArgument.field(
                "requests",
                f"has {len(items)} requests; at most {MAX_BATCH_GET} per call",
                reason="BATCH_TOO_LARGE",
            )
        v = Violations()
        for i, item in enumerate(items):
            v.require(item.subscription_id, f"requests[{i}].subscription_id")
            v.require(item.metric_code, f"requests[{i}].metric_code")
        v.raise_if_any()
        wanted = [aggregate_request(item) for item in items]
        async with self._session() as session:
            answers = await queries.batch_get_aggregates(session, wanted)
        responses = []
        for view, values in answers:
            link_last_ingestion(view.subscription_id, view.metric_code, view.period_start)
            responses.append(
                usage_pb2.GetAggregateResponse(
                    aggregate=aggregate_message(view),
                    event_values=[format_decimal(x) for x in values],
                )
            )
        return usage_pb2.BatchGetAggregatesResponse(responses=responses)

    async def ListAggregates(
        self, request: usage_pb2.ListAggregatesRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.ListAggregatesResponse:
        v = Violations()
        v.require(request.subscription_id, "subscription_id")
        v.raise_if_any()
        async with self._session() as session:
            views, token = await queries.list_aggregates(
                session,
                subscription_id=request.subscription_id,
                org_id=request.org_id,
                period_start=timestamp_or_none(request, "period_start_time"),
                requested_page_size=request.page_size,
                page_token=request.page_token,
            )
        return usage_pb2.ListAggregatesResponse(
            aggregates=[aggregate_message(v) for v in views], next_page_token=token
        )

    async def ListEvents(
        self, request: usage_pb2.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.ListEventsResponse:
        f = EventFilter(
            org_id=request.org_id,
            subscription_id=request.subscription_id,
            metric_code=request.metric_code,
            start_time=timestamp_or_none(request, "start_time"),
            end_time=timestamp_or_none(request, "end_time"),
            idempotency_key=request.idempotency_key,
        )
        async with self._session() as session:
            rows, token = await queries.list_events(
                session, f, requested_page_size=request.page_size, page_token=request.page_token
            )
        return usage_pb2.ListEventsResponse(
            events=[_stored_event(r) for r in rows], next_page_token=token
        )

    async def ListRejectedEvents(
        self, request: usage_pb2.ListRejectedEventsRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.ListRejectedEventsResponse:
        reason = ""
        if request.reason:
            known = REASON_FROM_PROTO.get(request.reason)
            if known is None:
                raise InvalidArgument.field("reason", f"{request.reason} is no rejection reason")
            reason = known.value
        f = RejectionFilter(
            org_id=request.org_id,
            reason=reason,
            metric_code=request.metric_code,
            start_time=timestamp_or_none(request, "start_time"),
            end_time=timestamp_or_none(request, "end_time"),
        )
        async with self._session() as session:
            rows, token = await rejections.list_rejected_events(
                session, f, requested_page_size=request.page_size, page_token=request.page_token
            )
        return usage_pb2.ListRejectedEventsResponse(
            rejected_events=[rejected_message(r) for r in rows], next_page_token=token
        )

    async def BackfillUsage(
        self, request: usage_pb2.BackfillUsageRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.BackfillUsageResponse:
        window = backfill.window_of(
            org_id=request.org_id,
            subscription_id=request.subscription_id,
            start=timestamp_or_none(request, "start_time"),
            end=timestamp_or_none(request, "end_time"),
            dry_run=request.dry_run,
        )

        async def work(uow: UnitOfWork) -> usage_pb2.BackfillUsageResponse:
            report = await backfill.backfill(uow, window)
            return usage_pb2.BackfillUsageResponse(
                changes=[
                    resources_pb2.AggregateChange(
                        subscription_id=c.subscription_id,
                        metric_code=c.metric_code,
                        period_start_time=to_timestamp(c.period_start),
                        old_value=format_decimal(c.old_value),
                        new_value=format_decimal(c.new_value),
                        old_event_count=c.old_event_count,
                        new_event_count=c.new_event_count,
                        frozen=c.frozen,
                    )
                    for c in report.changes
                ],
                events_scanned=report.events_scanned,
                aggregates_checked=report.aggregates_checked,
            )

        return await run_mutation(
            self.ctx.unit_of_work,
            self.ctx.requests,
            "BackfillUsage",
            request,
            usage_pb2.BackfillUsageResponse,
            work,
        )

    async def CreateApiKey(
        self, request: usage_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.CreateApiKeyResponse:
        # The secret stays out of what run_mutation stores for AIP-155 replays:
        # only this first answer ever carries it.
        created: list[str] = []

        async def work(uow: UnitOfWork) -> usage_pb2.CreateApiKeyResponse:
            key, secret = await apikeys.create_key(
                uow, request.org_id, request.name, self.clock.now()
            )
            created.append(secret)
            return usage_pb2.CreateApiKeyResponse(api_key=_api_key_message(key))

        response = await run_mutation(
            self.ctx.unit_of_work,
            self.ctx.requests,
            "CreateApiKey",
            request,
            usage_pb2.CreateApiKeyResponse,
            work,
        )
        if created:
            response.secret = created[0]
        return response

    async def ListApiKeys(
        self, request: usage_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.ListApiKeysResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.raise_if_any()
        async with self._session() as session:
            keys, token = await apikeys.list_keys(
                session,
                request.org_id,
                request.include_revoked,
                request.page_size,
                request.page_token,
            )
        return usage_pb2.ListApiKeysResponse(
            api_keys=[_api_key_message(k) for k in keys], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: usage_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.RevokeApiKeyResponse:
        v = Violations()
        v.require(request.org_id, "org_id")
        v.require(request.key_id, "key_id")
        v.raise_if_any()

        async def work(uow: UnitOfWork) -> usage_pb2.RevokeApiKeyResponse:
            key = await apikeys.revoke_key(uow, request.org_id, request.key_id, self.clock.now())
            return usage_pb2.RevokeApiKeyResponse(api_key=_api_key_message(key))

        return await run_mutation(
            self.ctx.unit_of_work,
            self.ctx.requests,
            "RevokeApiKey",
            request,
            usage_pb2.RevokeApiKeyResponse,
            work,
        )

    async def VerifyApiKey(
        self, request: usage_pb2.VerifyApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.VerifyApiKeyResponse:
        v = Violations()
        v.require(request.secret, "secret")
        v.raise_if_any()
        async with self._session() as session:
            key = await apikeys.verify_key(session, request.secret)
        return usage_pb2.VerifyApiKeyResponse(api_key=_api_key_message(key))


def _api_key_message(key: ApiKey) -> usage_pb2.ApiKey:
    return usage_pb2.ApiKey(
        key_id=key.key_id,
        org_id=key.org_id,
        name=key.name,
        create_time=to_timestamp(key.create_time),
        revoke_time=to_timestamp(key.revoke_time),
    )


def _batch_response(
    outcome: BatchOutcome, omit_accepted: bool = False
) -> usage_pb2.RecordUsageBatchResponse:
    response = usage_pb2.RecordUsageBatchResponse(
        accepted_count=outcome.accepted,
        duplicate_count=outcome.duplicates,
        rejected_count=outcome.rejected,
    )
    if omit_accepted:
        response.results.extend(_problems(outcome))
        return response
    # One result per event: built in place with add() (a list of messages
    # would be copied into the field) and, for the usual accepted event,
    # without the enum-keyed lookups of _result_message.
    add = response.results.add
    accepted = resources_pb2.USAGE_EVENT_STATUS_ACCEPTED
    for r in outcome.results:
        if r.status is EventStatus.ACCEPTED:
            add(index=r.index, idempotency_key=r.idempotency_key, status=accepted)
        else:
            response.results.append(_result_message(r))
    return response


def _problems(outcome: BatchOutcome) -> list[resources_pb2.UsageEventResult]:
    """Results of the events not accepted, in request order."""
    accepted = EventStatus.ACCEPTED
    return [_result_message(r) for r in outcome.results if r.status is not accepted]


def _stored_event(row: Any) -> resources_pb2.StoredUsageEvent:
    properties = row.properties or {}
    return resources_pb2.StoredUsageEvent(
        event=resources_pb2.UsageEvent(
            org_id=row.org_id,
            metric_code=row.metric_code,
            value=format_decimal(row.value) if row.value is not None else "",
            event_time=to_timestamp(row.event_time),
            idempotency_key=row.idempotency_key,
            subscription_id=row.subscription_id,
            properties={str(k): str(v) for k, v in properties.items()},
        ),
        period_start_time=to_timestamp(row.period_start),
        receive_time=to_timestamp(row.received_at),
    )


def register(
    server: grpc.aio.Server,
    ctx: ServiceContext,
    *,
    clock: Clock | None = None,
    copy_threshold: int = DEFAULT_COPY_THRESHOLD,
) -> Sequence[str]:
    api = UsageApi(ctx, clock or SystemClock(), copy_threshold)
    return [add_servicer(server, api, usage_pb2, usage_pb2_grpc, "UsageService")]
