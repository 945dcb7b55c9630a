"""What spans a provider call: transaction 1, the call, transaction 2.

No database transaction is ever open while the provider is called. An attempt
is written first (undispatched); the dispatcher leases it, calls the provider
with the attempt's idempotency key and records the answer in a second
transaction. A crash in between leaves the attempt undispatched, and the next
dispatch resends it with the same key, so the provider replays its first
answer instead of charging again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from services.kit.clock import Clock, SystemClock
from services.kit.errors import FailedPrecondition, Unavailable
from services.kit.tasks import raise_if_cancelling
from services.payments import domain as d
from services.payments import handlers as h
from services.payments.provider import (
    ChargeRequest,
    ChargeResult,
    PaymentProvider,
    ProviderError,
    ProviderEvent,
)
from services.payments.repository import PaymentsUnitOfWork

log = logging.getLogger(__name__)
T = TypeVar("T")

DISPATCH_BATCH = 50
SYNC_CURSOR = "provider_events"


async def provider_call(call: Awaitable[T]) -> T:
    """A provider call made for an RPC: its failures become API errors."""
    try:
        return await call
    except ProviderError as exc:
        if exc.retryable:
            raise Unavailable(
                message=f"payment provider unavailable: {exc}", reason="PROVIDER_UNAVAILABLE"
            ) from exc
        raise FailedPrecondition(
            message=f"payment provider refused: {exc}",
            reason="PROVIDER_REFUSED",
            metadata={"provider_code": exc.code},
        ) from exc


@dataclass
class SyncResult:
    checked: int = 0
    updated: int = 0
    payment_ids: list[str] = field(default_factory=list)
    synced_until: datetime | None = None


class Collector:
    """The payments workflows that talk to the provider; shared by RPCs, consumers and jobs."""

    def __init__(
        self,
        make_uow: Callable[[], PaymentsUnitOfWork],
        provider: PaymentProvider,
        policy: h.Policy,
        clock: Clock | None = None,
        *,
        sync_lookback: timedelta = timedelta(days=1),
        stale_attempt: timedelta = timedelta(seconds=60),
        publishable_key: str = "",
    ) -> None:
        self.publishable_key = publishable_key
        self.make_uow = make_uow
        self.provider = provider
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.sync_lookback = sync_lookback
        self.stale_attempt = stale_attempt
        self._wake = asyncio.Event()

    def now(self) -> datetime:
        return self.clock.now()

    def wake(self) -> None:
        self._wake.set()

    # ---------------------------------------------------------- attempts

    async def dispatch(self, attempt_id: str | None = None) -> list[d.Attempt]:
        """Send every undispatched attempt (or just ``attempt_id``); returns them settled."""
        async with self.make_uow() as uow:
            claimed = await uow.repo.claim_undispatched(
                self.now(), self.policy.dispatch_lease, DISPATCH_BATCH, attempt_id
            )
            invoices = await uow.repo.invoices({a.invoice_id for a in claimed})
            await uow.commit()
        done: list[d.Attempt] = []
        for attempt in claimed:
            inv = invoices.get(attempt.invoice_id)
            description = (inv.description or f"Invoice {inv.number}") if inv else ""
            settled = await self._send(attempt, description)
            if settled is not None:
                done.append(settled)
        return done

    async def _charge_once(self, attempt: d.Attempt, request: ChargeRequest) -> ChargeResult:
        """Charge, unless a charge made for this attempt outlived its idempotency key."""
        if self.now() - attempt.create_time >= self.policy.key_lifetime:
            # The key may be gone: resending it would charge a second time.
            made = await self.provider.find_charge({"tally_attempt_id": attempt.attempt_id})
            if made is not None:
                log.warning(
                    "payments: attempt %s found at the provider as %s; not sent again",
                    attempt.attempt_id,
                    made.provider_payment_intent_id,
                )
                return made
        return await self.provider.charge(request)

    async def _send(self, attempt: d.Attempt, description: str) -> d.Attempt | None:
        request = ChargeRequest(
            customer_id=attempt.provider_customer_id,
            payment_method_id=attempt.provider_payment_method_id,
            amount_minor=attempt.amount_minor,
            currency=attempt.currency_code,
            idempotency_key=attempt.idempotency_key,
            description=description,
            metadata={
                "tally_payment_id": attempt.payment_id,
                "tally_attempt_id": attempt.attempt_id,
                "tally_attempt_number": str(attempt.attempt_number),
                "tally_invoice_id": attempt.invoice_id,
                "tally_org_id": attempt.org_id,
            },
        )
        try:
            result = await self._charge_once(attempt, request)
        except ProviderError as exc:
            if exc.retryable:
                # The lease runs out and the next dispatch resends with the same key.
                log.warning("payments: attempt %s not sent yet: %s", attempt.attempt_id, exc)
                return None
            async with self.make_uow() as uow:
                applied = await h.mark_dispatch_failed(
                    uow, attempt.attempt_id, exc.code, str(exc), self.now(), self.policy
                )
                await uow.commit()
            return None if applied is None else applied[1]
        async with self.make_uow() as uow:
            applied = await h.record_outcome(
                uow,
                attempt.attempt_id,
                result.status,
                self.now(),
                self.policy,
                payment_intent_id=result.provider_payment_intent_id,
                failure_code=result.failure_code,
                failure_message=result.failure_message,
            )
            await uow.commit()
        # The attempt as this transaction saved it: no second read.
        return None if applied is None else applied[1]

    async def run_dispatcher(self, interval_seconds: float) -> None:
        while True:
            try:
                async with asyncio.timeout(interval_seconds):
                    await self._wake.wait()
            except TimeoutError:
                raise_if_cancelling()
            self._wake.clear()
            try:
                while len(await self.dispatch()) >= DISPATCH_BATCH:
                    pass
            except Exception:
                raise_if_cancelling()
                log.exception("payments: dispatch failed")

    async def dunning(self, now: datetime | None = None) -> list[d.Attempt]:
        """Start the retries due at ``now`` and send them; returns the settled attempts."""
        async with self.make_uow() as uow:
            started = await h.start_due_retries(uow, now or self.now(), self.policy)
            await uow.commit()
        settled: list[d.Attempt] = []
        for a in started:
            settled.extend(await self.dispatch(a.attempt_id))
        return settled

    async def run_dunning(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.dunning()
            except Exception:
                raise_if_cancelling()
                log.exception("payments: dunning failed")

    # ---------------------------------------------------------- refunds

    async def send_refund(self, refund_id: str) -> None:
        """Ask the provider for a PENDING refund (again: the key is the refund's own)."""
        async with self.make_uow() as uow:
            refund = await uow.repo.refund(refund_id)
            payment = None if refund is None else await uow.repo.payment(refund.payment_id)
        if refund is None or payment is None or refund.state is not d.RefundState.PENDING:
            return
        try:
            answer = await self.provider.refund(
                payment.provider_payment_intent_id,
                refund.amount_minor,
                d.refund_key(refund.refund_id),
                {"tally_refund_id": refund.refund_id, "tally_payment_id": payment.payment_id},
            )
        except ProviderError as exc:
            if exc.retryable:
                log.warning("payments: refund %s not sent yet: %s", refund_id, exc)
                return
            log.warning("payments: refund %s refused: %s", refund_id, exc)
            status, provider_id = "failed", ""
        else:
            status, provider_id = answer.status, answer.provider_refund_id
        async with self.make_uow() as uow:
            await h.settle_refund(uow, refund_id, status, provider_id, self.now())
            await uow.commit()

    # ---------------------------------------------------------- customers

    async def customer_of(self, org_id: str) -> str:
        """The org's provider customer, created (once, idempotently) on first need."""
        async with self.make_uow() as uow:
            known = await uow.repo.customer_id(org_id)
        if known is not None:
            return known
        customer = await provider_call(
            self.provider.create_customer(org_id, d.customer_key(org_id))
        )
        async with self.make_uow() as uow:
            stored = await h.record_customer(uow, org_id, self.provider.name, customer.customer_id)
            await uow.commit()
        return stored

    # ---------------------------------------------------------- provider events

    async def apply_event(self, event: ProviderEvent, source: str) -> h.Applied:
        event = await self._with_method_details(event)
        async with self.make_uow() as uow:
            applied = await h.apply_provider_event(uow, event, source, self.now(), self.policy)
            await uow.commit()
        for a in applied.started:
            await self.dispatch(a.attempt_id)
        return applied

    async def _with_method_details(self, event: ProviderEvent) -> ProviderEvent:
        """A SetupIntent names its method by id only; fetch the card before the transaction."""
        method = event.payment_method
        if method is None or not method.payment_method_id or method.last4:
            return event
        try:
            detailed = await self.provider.payment_method(method.payment_method_id)
        except ProviderError as exc:
            log.warning("payments: details of %s unavailable: %s", method.payment_method_id, exc)
            return event
        return replace(event, payment_method=detailed)

    async def sync(self, since: datetime | None = None) -> SyncResult:
        """Reconcile with the provider: its events since the cursor, then stuck attempts."""
        now = self.now()
        if since is None:
            async with self.make_uow() as uow:
                since = await uow.repo.sync_cursor(SYNC_CURSOR)
            since = since or now - self.sync_lookback
        events = await self._events(since)
        result = SyncResult(synced_until=since)
        for event in events:
            result.checked += 1
            applied = await self.apply_event(event, "sync")
            self._count(result, applied.changed_payment_ids)
            if result.synced_until is None or event.created > result.synced_until:
                result.synced_until = event.created
        # Attempts never sent (a crash after transaction 1) go out with their own key.
        for a in await self.dispatch():
            result.checked += 1
            if a.state is not d.AttemptState.PROCESSING:
                self._count(result, [a.payment_id])
        await self._settle_stale(result)
        async with self.make_uow() as uow:
            unsent = await uow.repo.unsent_refunds(self.now() - self.stale_attempt, DISPATCH_BATCH)
        for refund_id in unsent:
            result.checked += 1
            await self.send_refund(refund_id)
        async with self.make_uow() as uow:
            assert result.synced_until is not None
            await uow.repo.set_sync_cursor(SYNC_CURSOR, result.synced_until, now)
            await uow.commit()
        return result

    @staticmethod
    def _count(result: SyncResult, payment_ids: list[str]) -> None:
        for pid in payment_ids:
            result.updated += 1
            if pid not in result.payment_ids:
                result.payment_ids.append(pid)

    async def _events(self, since: datetime) -> list[ProviderEvent]:
        return await provider_call(self.provider.events_since(since))

    async def _settle_stale(self, result: SyncResult) -> None:
        """Ask the provider about attempts it accepted but never told us the end of."""
        async with self.make_uow() as uow:
            stale = await uow.repo.unsettled(self.now() - self.stale_attempt, DISPATCH_BATCH)
        for attempt in stale:
            result.checked += 1
            try:
                answer = await self.provider.payment_intent(attempt.provider_payment_intent_id)
            except ProviderError as exc:
                log.warning(
                    "payments: sync of %s failed: %s", attempt.provider_payment_intent_id, exc
                )
                continue
            async with self.make_uow() as uow:
                applied = await h.record_outcome(
                    uow,
                    attempt.attempt_id,
                    answer.status,
                    self.now(),
                    self.policy,
                    payment_intent_id=answer.provider_payment_intent_id,
                    failure_code=answer.failure_code,
                    failure_message=answer.failure_message,
                )
                await uow.commit()
            if applied is not None and applied[2] is not d.Outcome.NONE:
                self._count(result, [applied[0].payment_id])

    async def run_sync(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                result = await self.sync()
            except Exception:
                raise_if_cancelling()
                log.exception("payments: sync failed")
                continue
            if result.updated:
                log.info("payments: sync repaired %d payments", len(result.payment_ids))
