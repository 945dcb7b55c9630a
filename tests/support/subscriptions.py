"""Helpers for the subscriptions service's integration tests: a running
service on real PostgreSQL and NATS, catalog and usage events published the
way their producers do, and the events the service emitted."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import catalog_events_pb2, usage_events_pb2
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api
from tally.subscriptions.v1 import subscriptions_pb2_grpc
from tally.usage.v1 import resources_pb2 as usage_pb2

from services.kit import migrations
from services.kit.bus import EventBus
from services.kit.db import Database
from services.kit.events import HEADER_ORDERING_KEY, EventEnvelope
from services.kit.protoconv import to_timestamp
from services.kit.runtime import ServiceRuntime
from services.kit.streams import producer_stream, stream_name
from services.subscriptions.repository import package_table, package_version_table
from tests.support.services import service_in_process

SUBSCRIPTIONS_STREAM = stream_name("subscriptions")


@dataclass
class Harness:
    runtime: ServiceRuntime
    channel: grpc.aio.Channel
    stub: subscriptions_pb2_grpc.SubscriptionsServiceStub
    bus: EventBus
    database: Database

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.runtime.port}"

    async def publish(self, event: Message, aggregate_id: str) -> EventEnvelope:
        envelope = EventEnvelope.wrap(event, aggregate_id=aggregate_id)
        await self.bus.publish(envelope)
        return envelope

    async def publish_version(self, version: catalog_pb2.PackageVersion) -> None:
        await self.publish(
            catalog_events_pb2.PackagePublishedEvent(package_version=version), version.package_id
        )
        await self.wait_for(lambda: self._has_version(version.package_version_id))

    async def archive(self, package_id: str, code: str) -> None:
        await self.publish(
            catalog_events_pb2.PackageArchivedEvent(package_id=package_id, package_code=code),
            package_id,
        )
        await self.wait_for(lambda: self._archived(package_id))

    async def _has_version(self, version_id: str) -> bool:
        async with self.database.session() as session:
            found = await session.scalar(
                select(package_version_table.c.package_version_id).where(
                    package_version_table.c.package_version_id == version_id
                )
            )
        return found is not None

    async def _archived(self, package_id: str) -> bool:
        async with self.database.session() as session:
            archived = await session.scalar(
                select(package_table.c.archived).where(package_table.c.package_id == package_id)
            )
        return bool(archived)

    async def wait_for(self, check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.05)

    async def envelopes(self, aggregate_id: str) -> list[EventEnvelope]:
        """Events of one aggregate on TALLY_SUBSCRIPTIONS, in stream order."""
        js = self.bus.js
        info = await js.stream_info(SUBSCRIPTIONS_STREAM)
        out: list[EventEnvelope] = []
        for seq in range(int(info.state.first_seq or 1), int(info.state.last_seq or 0) + 1):
            msg = await js.get_msg(SUBSCRIPTIONS_STREAM, seq)
            headers = dict(msg.headers or {})
            envelope = EventEnvelope.from_message(msg.subject or "", headers, msg.data or b"")
            if envelope.aggregate_id == aggregate_id:
                out.append(envelope)
        return out

    async def events(
        self, aggregate_id: str, subject_suffix: str = ""
    ) -> list[tuple[str, Message]]:
        """Events of one aggregate (by short name), decoded, in stream order."""
        return [
            (e.subject.rsplit(".", 1)[-1], e.decode())
            for e in await self.envelopes(aggregate_id)
            if not subject_suffix or e.subject.endswith(subject_suffix)
        ]

    async def ordering_keys(self, aggregate_id: str) -> set[str]:
        """The ordering keys the aggregate's events carry."""
        return {e.context.get(HEADER_ORDERING_KEY, "") for e in await self.envelopes(aggregate_id)}

    async def wait_events(
        self, aggregate_id: str, names: Sequence[str], timeout: float = 20.0
    ) -> list[tuple[str, Message]]:
        """Wait until the aggregate's events are exactly ``names`` (in order)."""
        found: list[tuple[str, Message]] = []

        async def check() -> bool:
            nonlocal found
            found = await self.events(aggregate_id)
            return [n for n, _ in found] == list(names) or len(found) > len(names)

        with suppress(AssertionError):
            await self.wait_for(check, timeout)
        assert [n for n, _ in found] == list(names)
        return found


@asynccontextmanager
async def running_service(
    database_url: str, nats_url: str, *, clock_interval: float = 0, **overrides: Any
) -> AsyncIterator[Harness]:
    """Migrate, start the service in process (billing clock loop off unless
    asked), and connect a channel and a bus."""
    await migrations.upgrade_async("subscriptions", database_url)
    previous = os.environ.get("SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS")
    os.environ["SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS"] = str(clock_interval)
    try:
        async with service_in_process(
            "subscriptions", database_url, nats_url, outbox_poll_seconds=0.05, **overrides
        ) as runtime:
            bus = await EventBus.connect(nats_url, name="subscriptions-tests")
            await bus.ensure_streams(
                [producer_stream(p) for p in ("catalog", "usage", "payments", "subscriptions")]
            )
            database = Database(database_url, "subscriptions")
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}")
            try:
                yield Harness(
                    runtime,
                    channel,
                    subscriptions_pb2_grpc.SubscriptionsServiceStub(channel),
                    bus,
                    database,
                )
            finally:
                await channel.close()
                await database.dispose()
                await bus.close()
    finally:
        if previous is None:
            os.environ.pop("SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS", None)
        else:
            os.environ["SUBSCRIPTIONS_CLOCK_INTERVAL_SECONDS"] = previous


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def package_version(
    code: str,
    *,
    base_fee: str = "10",
    currency: str = "USD",
    interval: int = catalog_pb2.BILLING_INTERVAL_MONTHLY,
    trial_days: int = 0,
    version: int = 1,
    package_id: str | None = None,
    limits: Sequence[catalog_pb2.FeatureLimit] = (),
    metric_codes: Sequence[str] = ("api_calls",),
) -> catalog_pb2.PackageVersion:
    """A published version as the catalog's PackagePublishedEvent carries it."""
    return catalog_pb2.PackageVersion(
        package_version_id=new_id(f"pv-{code}"),
        package_id=package_id or new_id(f"pkg-{code}"),
        package_code=code,
        version=version,
        state=catalog_pb2.PACKAGE_VERSION_STATE_PUBLISHED,
        name=code.title(),
        currency_code=currency,
        billing_interval=interval,  # type: ignore[arg-type]
        base_fee_amount=base_fee,
        base_fee_timing=catalog_pb2.BASE_FEE_TIMING_IN_ADVANCE,
        trial_days=trial_days,
        charges=[
            catalog_pb2.Charge(charge_id=new_id("ch"), metric_id=new_id("m"), metric_code=c)
            for c in metric_codes
        ],
        feature_limits=list(limits),
        publish_time=to_timestamp(datetime.now(UTC)),
    )


def usage_event(
    subscription_id: str,
    org_id: str,
    metric_code: str,
    value: str,
    period_start: datetime,
    period_end: datetime,
    revision: int,
) -> usage_events_pb2.UsageAggregatedEvent:
    return usage_events_pb2.UsageAggregatedEvent(
        aggregate=usage_pb2.UsageAggregate(
            subscription_id=subscription_id,
            org_id=org_id,
            metric_code=metric_code,
            period_start_time=to_timestamp(period_start),
            period_end_time=to_timestamp(period_end),
            value=value,
            event_count=1,
        ),
        revision=revision,
    )


# ------------------------------------------------------------ RPC helpers

T = 5.0  # deadline of every call


def details(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str], dict[str, str]]:
    """(reason, ErrorInfo metadata, {field: description})."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reason, meta, fields = "", {}, {}
    for item in status.details:
        if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            item.Unpack(info)
            reason, meta = info.reason, dict(info.metadata)
        elif item.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            item.Unpack(bad)
            fields = {v.field: v.description for v in bad.field_violations}
    return reason, meta, fields


async def create(
    h: Harness,
    version: catalog_pb2.PackageVersion | None = None,
    package_id: str = "",
    **kwargs: object,
) -> pb.Subscription:
    org = str(kwargs.pop("org_id", new_id("org")))
    request = api.CreateSubscriptionRequest(org_id=org, package_id=package_id, **kwargs)  # type: ignore[arg-type]
    if version is not None:
        request.package_id = version.package_id
        request.package_version_id = version.package_version_id
    reply = await h.stub.CreateSubscription(request, timeout=T)
    return reply.subscription


async def pause(h: Harness, sid: str) -> pb.Subscription:
    r = await h.stub.PauseSubscription(api.PauseSubscriptionRequest(subscription_id=sid), timeout=T)
    return r.subscription


async def resume(h: Harness, sid: str) -> pb.Subscription:
    r = await h.stub.ResumeSubscription(
        api.ResumeSubscriptionRequest(subscription_id=sid), timeout=T
    )
    return r.subscription


async def cancel(
    h: Harness, sid: str, timing: int = pb.CANCEL_TIMING_IMMEDIATE, reason: str = ""
) -> api.CancelSubscriptionResponse:
    return await h.stub.CancelSubscription(
        api.CancelSubscriptionRequest(subscription_id=sid, timing=timing, reason=reason),  # type: ignore[arg-type]
        timeout=T,
    )


async def change(
    h: Harness,
    sid: str,
    target: catalog_pb2.PackageVersion,
    timing: int = pb.PLAN_CHANGE_TIMING_UNSPECIFIED,
) -> api.ChangePlanResponse:
    return await h.stub.ChangePlan(
        api.ChangePlanRequest(
            subscription_id=sid,
            package_version_id=target.package_version_id,
            timing=timing,  # type: ignore[arg-type]
        ),
        timeout=T,
    )


async def expect_illegal(call: object, current: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason, meta, _ = details(caught.value)
    assert reason in {"ILLEGAL_STATE_TRANSITION", "SUBSCRIPTION_NOT_CHANGEABLE"}
    assert meta["current_state"] == current
    assert current in (caught.value.details() or "")
