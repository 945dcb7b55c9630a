"""Composition root of the payments service: the one place that wires it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from starlette.routing import BaseRoute

from services.kit.clock import Clock
from services.kit.consumer import Subscription
from services.kit.runtime import Job, ServiceContext, ServiceSpec
from services.kit.uow import UnitOfWork
from services.payments import consumers, grpc_api, handlers, repository
from services.payments.dispatch import Collector
from services.payments.outbound import consumers as webhook_consumers
from services.payments.outbound.dispatcher import WebhookDispatcher
from services.payments.provider import PaymentProvider, provider_from_settings
from services.payments.repository import PaymentsUnitOfWork
from services.payments.settings import PaymentsSettings, payments_settings
from services.payments.webhooks import webhook_routes

# One Collector per running service (its dispatcher's wake-up is shared by the
# RPCs, the consumer, the webhook route and the jobs). Keyed by the context's
# identity; the context is kept beside it so a reused id is never mistaken.
_collectors: dict[int, tuple[ServiceContext, Collector]] = {}


def uow_factory(ctx: ServiceContext) -> Callable[[], PaymentsUnitOfWork]:
    def make() -> PaymentsUnitOfWork:
        return PaymentsUnitOfWork(ctx.database, ctx.outbox, on_events_committed=ctx.relay.wake)

    return make


def build_collector(
    ctx: ServiceContext,
    settings: PaymentsSettings | None = None,
    provider: PaymentProvider | None = None,
    clock: Clock | None = None,
) -> Collector:
    s = settings or payments_settings()
    the_provider = provider or provider_from_settings(s)
    return Collector(
        uow_factory(ctx),
        the_provider,
        handlers.Policy(retry_days=s.dunning_retry_days, provider=the_provider.name),
        clock,
        sync_lookback=timedelta(seconds=s.sync_lookback_seconds),
        stale_attempt=timedelta(seconds=s.stale_attempt_seconds),
        publishable_key=s.stripe_publishable_key,
    )


def collector_of(ctx: ServiceContext) -> Collector:
    found = _collectors.get(id(ctx))
    if found is None or found[0] is not ctx:
        found = (ctx, build_collector(ctx))
        _collectors[id(ctx)] = found
    return found[1]


_dispatchers: dict[int, tuple[ServiceContext, WebhookDispatcher]] = {}


def webhook_dispatcher_of(ctx: ServiceContext) -> WebhookDispatcher:
    """The outbound webhook dispatcher of a running service (one per context,
    as the Collector): the consumers wake it, the job runs it."""
    found = _dispatchers.get(id(ctx))
    if found is None or found[0] is not ctx:
        s = payments_settings()
        dispatcher = WebhookDispatcher(uow_factory(ctx), timeout_seconds=s.webhook_timeout_seconds)
        found = (ctx, dispatcher)
        _dispatchers[id(ctx)] = found
    return found[1]


def _uow_factory(ctx: ServiceContext) -> Callable[[], UnitOfWork]:
    return uow_factory(ctx)


def _subscriptions(ctx: ServiceContext) -> Sequence[Subscription[Any]]:
    return [
        *consumers.subscriptions(
            collector_of(ctx),
            messages_per_transaction=ctx.settings.consumer_messages_per_transaction,
        ),
        *webhook_consumers.subscriptions(
            webhook_dispatcher_of(ctx),
            messages_per_transaction=ctx.settings.consumer_messages_per_transaction,
        ),
    ]


def _routes(ctx: ServiceContext) -> Sequence[BaseRoute]:
    return webhook_routes(collector_of(ctx))


def jobs(ctx: ServiceContext) -> Sequence[Job]:
    s = payments_settings()
    collector = collector_of(ctx)

    async def dispatcher() -> None:
        try:
            await collector.run_dispatcher(s.dispatch_interval_seconds)
        finally:
            # Jobs stop last (after HTTP and gRPC): nothing calls the provider any more.
            await collector.provider.aclose()

    async def dunning() -> None:
        await collector.run_dunning(s.dunning_interval_seconds)

    async def sync() -> None:
        await collector.run_sync(s.sync_interval_seconds)

    webhooks = webhook_dispatcher_of(ctx)

    async def webhook_dispatcher() -> None:
        try:
            await webhooks.run(s.webhook_dispatch_interval_seconds)
        finally:
            await webhooks.aclose()

    found: list[Job] = [dispatcher, webhook_dispatcher]
    if s.dunning_interval_seconds > 0:
        found.append(dunning)
    if s.sync_interval_seconds > 0:
        found.append(sync)
    return found


SPEC = ServiceSpec(
    name="payments",
    metadata=repository.metadata,
    register=grpc_api.registrar(collector_of, lambda ctx: webhook_dispatcher_of(ctx).wake),
    subscriptions=_subscriptions,
    jobs=jobs,
    uow_factory=_uow_factory,
    http_routes=_routes,
    # Outbound webhooks read every producer's stream (services/payments/outbound).
    extra_producers=("invoicing", "subscriptions", "usage"),
)
