"""Helpers for the payments service's integration tests: the service in process
on real PostgreSQL and NATS, the Stripe emulator as its provider (webhooks
sent to the service's own HTTP port), and the invoicing events it consumes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, timedelta

import grpc
from google.protobuf.message import Message
from tally.events.v1 import invoicing_events_pb2
from tally.invoicing.v1 import resources_pb2 as inv_pb2
from tally.payments.v1 import payments_pb2 as api
from tally.payments.v1 import payments_pb2_grpc
from tally.payments.v1 import resources_pb2 as pb
from tally.type.v1 import money_pb2

from devtools.stripe_emulator import DEFAULT_API_KEY, DEFAULT_WEBHOOK_SECRET, StripeEmulator
from services.kit import migrations
from services.kit.bus import EventBus
from services.kit.events import EventEnvelope
from services.kit.runtime import ServiceRuntime
from services.kit.streams import producer_stream, stream_name
from services.payments.bootstrap import collector_of
from services.payments.dispatch import Collector
from tests.support.services import service_in_process

PAYMENTS_STREAM = stream_name("payments")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@dataclass
class Harness:
    runtime: ServiceRuntime
    channel: grpc.aio.Channel
    stub: payments_pb2_grpc.PaymentsServiceStub
    bus: EventBus
    emu: StripeEmulator

    @property
    def collector(self) -> Collector:
        assert self.runtime.context is not None
        return collector_of(self.runtime.context)

    @property
    def webhook_url(self) -> str:
        assert self.runtime.http is not None
        return f"http://127.0.0.1:{self.runtime.http.port}/webhooks/stripe"

    async def publish(self, event: Message, aggregate_id: str) -> EventEnvelope:
        envelope = EventEnvelope.wrap(event, aggregate_id=aggregate_id)
        await self.bus.publish(envelope)
        return envelope

    async def finalize_invoice(
        self, org: str, amount_minor: int, *, currency: str = "USD", subscription: str = ""
    ) -> str:
        """Publish invoice.finalized as invoicing does; returns the invoice id."""
        invoice_id = new_id("inv")
        await self.publish(
            invoicing_events_pb2.InvoiceFinalizedEvent(
                invoice=inv_pb2.Invoice(
                    invoice_id=invoice_id,
                    org_id=org,
                    subscription_id=subscription or new_id("sub"),
                    number=f"{org.upper()}-0001",
                    state=inv_pb2.INVOICE_STATE_FINALIZED,
                    currency_code=currency,
                    amount_due=money_pb2.Money(amount_minor=amount_minor, currency_code=currency),
                ),
                payment_description=f"Tally invoice {invoice_id}",
            ),
            invoice_id,
        )
        return invoice_id

    async def add_card(self, org: str, token: str = "pm_card_visa") -> pb.PaymentMethod:
        reply = await self.stub.AttachPaymentMethod(
            api.AttachPaymentMethodRequest(
                org_id=org, provider_payment_method_id=token, set_default=True
            ),
            timeout=10,
        )
        return reply.payment_method

    async def payment_of(self, invoice_id: str) -> pb.Payment | None:
        reply = await self.stub.ListPayments(
            api.ListPaymentsRequest(invoice_id=invoice_id), timeout=5
        )
        return reply.payments[0] if reply.payments else None

    async def wait_payment(self, invoice_id: str, state: int, timeout: float = 15.0) -> pb.Payment:
        found: pb.Payment | None = None

        async def check() -> bool:
            nonlocal found
            found = await self.payment_of(invoice_id)
            return found is not None and found.state == state

        try:
            await wait_for(check, timeout)
        except AssertionError:
            raise AssertionError(
                f"payment of {invoice_id} is {found}, wanted state {state}"
            ) from None
        assert found is not None
        return found

    async def attempts(self, payment_id: str) -> list[pb.PaymentAttempt]:
        reply = await self.stub.ListPaymentAttempts(
            api.ListPaymentAttemptsRequest(payment_id=payment_id), timeout=5
        )
        return sorted(reply.attempts, key=lambda a: a.attempt_number)

    async def events(self, subject_suffix: str = "", invoice_id: str = "") -> list[Message]:
        """Payments events on the stream (``payment.failed`` ...), oldest first.

        Waits for the outbox to drain first, so every event committed before
        the call is counted (exactly-once assertions need all of them).
        """
        await wait_for(self._outbox_drained)
        js = self.bus.js
        info = await js.stream_info(PAYMENTS_STREAM)
        out: list[Message] = []
        for seq in range(int(info.state.first_seq or 1), int(info.state.last_seq or 0) + 1):
            msg = await js.get_msg(PAYMENTS_STREAM, seq)
            env = EventEnvelope.from_message(
                msg.subject or "", dict(msg.headers or {}), msg.data or b""
            )
            if subject_suffix and env.subject != f"tally.payments.{subject_suffix}":
                continue
            decoded = env.decode()
            if invoice_id and getattr(decoded, "invoice_id", "") != invoice_id:
                continue
            out.append(decoded)
        return out

    async def _outbox_drained(self) -> bool:
        ctx = self.runtime.context
        assert ctx is not None
        async with ctx.database.session() as session:
            return await ctx.outbox.pending_count(session) == 0

    async def wait_events(
        self, subject_suffix: str, invoice_id: str, count: int, timeout: float = 15.0
    ) -> list[Message]:
        found: list[Message] = []

        async def check() -> bool:
            nonlocal found
            found = await self.events(subject_suffix, invoice_id)
            return len(found) >= count

        await wait_for(check, timeout)
        return found

    async def get(self, payment_id: str) -> pb.Payment:
        reply = await self.stub.GetPayment(api.GetPaymentRequest(payment_id=payment_id), timeout=5)
        return reply.payment

    async def walk_dunning(self, payment: pb.Payment) -> tuple[pb.Payment, list[int]]:
        """Run the dunning job at each scheduled retry until none is left.

        Returns the payment after the last attempt and the days waited before
        each retry. One second before its time a retry must not start.
        """
        waits: list[int] = []
        while payment.HasField("next_retry_time"):
            due = payment.next_retry_time.ToDatetime(tzinfo=UTC)
            failed_at = (await self.attempts(payment.payment_id))[-1].complete_time
            waits.append(round((due - failed_at.ToDatetime(tzinfo=UTC)).total_seconds() / 86400))
            # The job skips payments locked by a webhook being applied: let those land.
            await self.emu.wait_for_deliveries()
            assert await self.collector.dunning(now=due - timedelta(seconds=1)) == []
            settled = await self.collector.dunning(now=due)
            assert [a.attempt_number for a in settled] == [payment.attempt_count + 1]
            payment = await self.get(payment.payment_id)
        return payment, waits

    def charges_for(self, idempotency_key: str) -> list[tuple[str, str, str | None]]:
        return [
            r
            for r in self.emu.requests
            if r[0].upper() == "POST" and r[1] == "/v1/payment_intents" and r[2] == idempotency_key
        ]


@asynccontextmanager
async def running_payments(database_url: str, nats_url: str, **env: str) -> AsyncIterator[Harness]:
    """Migrate, start the Stripe emulator and the payments service in process.

    Dunning and sync jobs are off: tests drive them with an explicit instant.
    """
    await migrations.upgrade_async("payments", database_url)
    async with StripeEmulator() as emu:
        settings = {
            "PAYMENTS_STRIPE_API_KEY": DEFAULT_API_KEY,
            "PAYMENTS_STRIPE_API_BASE": emu.base_url,
            "PAYMENTS_STRIPE_WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
            "PAYMENTS_DUNNING_INTERVAL_SECONDS": "0",
            "PAYMENTS_SYNC_INTERVAL_SECONDS": "0",
            "PAYMENTS_DISPATCH_INTERVAL_SECONDS": "0.5",
            "PAYMENTS_STALE_ATTEMPT_SECONDS": "0",
            **env,
        }
        previous = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        try:
            async with service_in_process(
                "payments", database_url, nats_url, outbox_poll_seconds=0.05
            ) as runtime:
                bus = await EventBus.connect(nats_url, name="payments-tests")
                await bus.ensure_streams([producer_stream(p) for p in ("invoicing", "payments")])
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}")
                harness = Harness(
                    runtime, channel, payments_pb2_grpc.PaymentsServiceStub(channel), bus, emu
                )
                emu.webhook_url = harness.webhook_url
                try:
                    yield harness
                finally:
                    await channel.close()
                    await bus.close()
        finally:
            for k, v in previous.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
