"""The combined statements of a finalized invoice's collection answer and write
exactly what the separate ones did: the customer and default method read
together, the invoice upserted in the same statement, the payment written in its
final state with its first attempt, and an outcome saving attempt and payment
together."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.kit import migrations
from services.kit.db import Database
from services.kit.outbox import Outbox
from services.payments import domain as d
from services.payments import handlers as h
from services.payments.repository import Means, PaymentsUnitOfWork, metadata

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
POLICY = h.Policy()

# Each method: (is_default, detached). At most one attached default per org
# (the partial unique index), so later attached defaults are made non-default.
methods = st.lists(st.tuples(st.booleans(), st.booleans()), max_size=3)


@pytest.fixture(scope="module")
async def database(database_url: str) -> AsyncIterator[Database]:
    await migrations.upgrade_async("payments", database_url)
    db = Database(database_url, "payments", pool_size=2)
    yield db
    await db.dispose()


def _uow(database: Database) -> PaymentsUnitOfWork:
    return PaymentsUnitOfWork(database, Outbox(metadata.tables["payments.outbox_event"]))


async def _org(database: Database, has_customer: bool, kinds: list[tuple[bool, bool]]) -> str:
    org = f"org-{uuid.uuid4().hex[:10]}"
    async with _uow(database) as uow:
        if has_customer:
            await uow.repo.remember_customer(org, "stripe", f"cus_{org}")
        attached_default = False
        for i, (is_default, detached) in enumerate(kinds):
            default = is_default and (detached or not attached_default)
            attached_default = attached_default or (default and not detached)
            await uow.repo.insert_method(
                {
                    "payment_method_id": f"pm-{org}-{i}",
                    "org_id": org,
                    "provider": "stripe",
                    "provider_payment_method_id": f"pm_{org}_{i}",
                    "type": "card",
                    "is_default": default,
                    "create_time": NOW,
                    "detached_time": NOW if detached else None,
                }
            )
        await uow.commit()
    return org


async def _separately(uow: PaymentsUnitOfWork, org: str) -> Means:
    method = await uow.repo.default_method(org)
    return Means(
        await uow.repo.customer_id(org),
        None
        if method is None
        else (method.payment_method_id, method.provider, method.provider_payment_method_id),
    )


def _invoice(org: str, amount_minor: int) -> h.FinalizedInvoice:
    return h.FinalizedInvoice(
        invoice_id=f"inv-{uuid.uuid4().hex[:10]}",
        org_id=org,
        subscription_id="sub-1",
        number="INV-1",
        currency_code="USD",
        amount_due_minor=amount_minor,
        description="usage",
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(has_customer=st.booleans(), kinds=methods)
async def test_means_read_together_answer_what_separate_reads_answer(
    database: Database, has_customer: bool, kinds: list[tuple[bool, bool]]
) -> None:
    org = await _org(database, has_customer, kinds)
    inv = _invoice(org, 100)
    values = {
        "invoice_id": inv.invoice_id,
        "org_id": org,
        "subscription_id": inv.subscription_id,
        "number": inv.number,
        "currency_code": inv.currency_code,
        "amount_due_minor": inv.amount_due_minor,
        "state": h.INVOICE_FINALIZED,
        "description": inv.description,
        "update_time": NOW,
    }
    async with _uow(database) as uow:
        expected = await _separately(uow, org)
        assert await uow.repo.means(org) == expected
        assert await uow.repo.upsert_invoice_reading_means(values) == expected
        stored = await uow.repo.invoice(inv.invoice_id)
        assert stored is not None
        assert {k: getattr(stored, k) for k in values} == values


@pytest.mark.parametrize("has_method", [True, False])
async def test_a_finalized_invoice_is_written_once_in_its_final_state(
    database: Database, has_method: bool
) -> None:
    org = await _org(database, True, [(True, False)] if has_method else [])
    inv = _invoice(org, 1250)
    async with _uow(database) as uow:
        attempt = await h.invoice_finalized(uow, inv, NOW, POLICY)
        emitted = [e.event_type for e in uow.emitted]
        await uow.commit()
    async with _uow(database) as uow:
        again = await h.invoice_finalized(uow, replace(inv, description="again"), NOW, POLICY)
        assert again is None and not uow.emitted
        await uow.commit()

    async with _uow(database) as uow:
        payment = await uow.repo.payment_of_invoice(inv.invoice_id)
        assert payment is not None
        attempts = await uow.repo.list_attempts(payment.payment_id, None, 10)
    if has_method:
        assert attempt is not None and emitted == []
        assert attempts == [attempt]
        assert payment.state is d.PaymentState.PROCESSING and payment.attempt_count == 1
        assert payment.payment_method_id == attempt.payment_method_id == f"pm-{org}-0"
        assert attempt.provider_customer_id == f"cus_{org}"
        assert attempt.idempotency_key == d.attempt_key(inv.invoice_id, 1)
        assert attempt.lease_until is None and not attempt.dispatched
    else:
        assert attempt is None and attempts == []
        assert len(emitted) == 1
        assert payment.state is d.PaymentState.REQUIRES_ACTION
        assert payment.action_reason is d.ActionReason.NO_PAYMENT_METHOD
        assert payment.attempt_count == 0
    assert payment.amount_minor == 1250 and payment.invoice_number == "INV-1"


@pytest.mark.parametrize("status", ["succeeded", "failed", "requires_action", "processing"])
async def test_an_outcome_returns_the_attempt_and_payment_it_saved(
    database: Database, status: str
) -> None:
    org = await _org(database, True, [(True, False)])
    inv = _invoice(org, 900)
    async with _uow(database) as uow:
        attempt = await h.invoice_finalized(uow, inv, NOW, POLICY)
        await uow.commit()
    assert attempt is not None
    later = NOW + timedelta(minutes=1)
    async with _uow(database) as uow:
        applied = await h.record_outcome(
            uow,
            attempt.attempt_id,
            status,
            later,
            POLICY,
            payment_intent_id=f"pi_{attempt.attempt_id}",
            failure_code="card_declined" if status == "failed" else "",
        )
        await uow.commit()
    assert applied is not None
    payment, saved, _ = applied
    async with _uow(database) as uow:
        assert await uow.repo.attempt(attempt.attempt_id) == saved
        assert await uow.repo.payment(payment.payment_id) == payment
        assert await uow.repo.payment_of_attempt(attempt.attempt_id) == payment
    assert saved.dispatched and saved.provider_payment_intent_id == f"pi_{attempt.attempt_id}"


async def test_an_outcome_for_an_unknown_attempt_changes_nothing(database: Database) -> None:
    async with _uow(database) as uow:
        assert await h.record_outcome(uow, "pa_missing", "succeeded", NOW, POLICY) is None
        assert not uow.emitted


async def test_a_repeated_answer_changes_nothing_and_emits_nothing(database: Database) -> None:
    org = await _org(database, True, [(True, False)])
    async with _uow(database) as uow:
        attempt = await h.invoice_finalized(uow, _invoice(org, 700), NOW, POLICY)
        await uow.commit()
    assert attempt is not None
    intent = f"pi_{attempt.attempt_id}"
    answers = []
    for minutes in (1, 2):
        async with _uow(database) as uow:
            applied = await h.record_outcome(
                uow,
                attempt.attempt_id,
                "succeeded",
                NOW + timedelta(minutes=minutes),
                POLICY,
                payment_intent_id=intent,
            )
            answers.append((applied, len(uow.emitted)))
            await uow.commit()
    (first, first_events), (second, second_events) = answers
    assert first is not None and second is not None
    assert first[2] is d.Outcome.SUCCEEDED and first_events == 1
    assert second[2] is d.Outcome.NONE and second_events == 0
    assert second[:2] == first[:2]
    async with _uow(database) as uow:
        assert await uow.repo.attempt(attempt.attempt_id) == first[1]
        assert await uow.repo.payment(first[0].payment_id) == first[0]
