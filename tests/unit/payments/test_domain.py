"""The payments domain: transitions never go backwards, the dunning schedule,
refund limits and idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments import domain as d
from services.payments.domain import states

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
CARD = ("pm_1", "stripe", "pm_stripe_1", "cus_1")
DAYS = (1, 3, 5)


def payment(amount: int = 1000) -> d.Payment:
    return d.Payment(
        payment_id="pay_1",
        org_id="org_1",
        invoice_id="inv_1",
        invoice_number="A-1",
        subscription_id="sub_1",
        currency_code="USD",
        amount_minor=amount,
        create_time=T0,
        update_time=T0,
    )


def test_attempt_key_names_invoice_and_attempt() -> None:
    p = payment()
    first = p.start_attempt("pa_1", d.AttemptTrigger.INVOICE_FINALIZED, CARD, T0)
    assert first.idempotency_key == "tally:invoice:inv_1:attempt:1"
    assert d.refund_key("rf_9") == "tally:refund:rf_9"
    assert d.request_key("attach", "org", "") is None


def test_success_is_terminal_and_a_late_failure_changes_nothing() -> None:
    p = payment()
    a = p.start_attempt("pa_1", d.AttemptTrigger.INVOICE_FINALIZED, CARD, T0)
    assert p.apply(a, "succeeded", T0, DAYS, payment_intent_id="pi_1") is d.Outcome.SUCCEEDED
    assert p.apply(a, "failed", T0, DAYS, failure_code="card_declined") is d.Outcome.NONE
    assert p.apply(a, "requires_action", T0, DAYS) is d.Outcome.NONE
    assert p.apply(a, "succeeded", T0, DAYS) is d.Outcome.NONE  # a duplicate
    assert (p.state, a.state, a.failure_code) == (
        d.PaymentState.SUCCEEDED,
        d.AttemptState.SUCCEEDED,
        "",
    )
    with pytest.raises(ValueError):
        p.start_attempt("pa_2", d.AttemptTrigger.ON_DEMAND, CARD, T0)


def test_dunning_walks_the_schedule_to_a_final_failure() -> None:
    p = payment()
    now = T0
    seen = []
    a = p.start_attempt("pa_1", d.AttemptTrigger.INVOICE_FINALIZED, CARD, now)
    for n in range(1, 5):
        assert p.apply(a, "failed", now, DAYS, failure_code="card_declined") is d.Outcome.FAILED
        seen.append((a.attempt_number, a.final_attempt, p.next_retry_time, p.state))
        if p.next_retry_time is None:
            break
        now = p.next_retry_time
        a = p.start_attempt(f"pa_{n + 1}", d.AttemptTrigger.DUNNING_RETRY, CARD, now)
    assert seen == [
        (1, False, T0 + timedelta(days=1), d.PaymentState.RETRY_SCHEDULED),
        (2, False, T0 + timedelta(days=4), d.PaymentState.RETRY_SCHEDULED),
        (3, False, T0 + timedelta(days=9), d.PaymentState.RETRY_SCHEDULED),
        (4, True, None, d.PaymentState.FAILED),
    ]
    # After the final failure, "retry payment" may still succeed.
    again = p.start_attempt("pa_5", d.AttemptTrigger.ON_DEMAND, CARD, now)
    assert p.apply(again, "succeeded", now, DAYS) is d.Outcome.SUCCEEDED


def test_an_older_attempts_failure_does_not_move_the_payment() -> None:
    p = payment()
    a1 = p.start_attempt("pa_1", d.AttemptTrigger.INVOICE_FINALIZED, CARD, T0)
    p.apply(a1, "requires_action", T0, DAYS)
    assert p.state is d.PaymentState.REQUIRES_ACTION
    a2 = p.start_attempt("pa_2", d.AttemptTrigger.ON_DEMAND, CARD, T0)
    assert p.apply(a1, "failed", T0, DAYS) is d.Outcome.NONE
    assert p.state is d.PaymentState.PROCESSING
    assert p.apply(a2, "succeeded", T0, DAYS) is d.Outcome.SUCCEEDED


def test_processing_answers_record_the_intent_only() -> None:
    p = payment()
    a = p.start_attempt("pa_1", d.AttemptTrigger.INVOICE_FINALIZED, CARD, T0)
    assert p.apply(a, "processing", T0, DAYS, payment_intent_id="pi_7") is d.Outcome.NONE
    assert (a.state, a.provider_payment_intent_id, a.dispatched) == (
        d.AttemptState.PROCESSING,
        "pi_7",
        True,
    )
    assert p.provider_payment_intent_id == "pi_7"


def test_no_method_waits_once_and_voided_invoices_cancel() -> None:
    p = payment()
    assert p.wait_for_action(d.ActionReason.NO_PAYMENT_METHOD, T0)
    assert not p.wait_for_action(d.ActionReason.NO_PAYMENT_METHOD, T0)
    assert p.cancel(T0)
    assert not p.cancel(T0)


OUTCOMES = st.sampled_from(["succeeded", "failed", "requires_action", "processing"])


@given(st.lists(st.tuples(st.integers(0, 2), OUTCOMES), max_size=30))
def test_payment_state_never_leaves_succeeded(steps: list[tuple[int, str]]) -> None:
    p = payment()
    attempts = [p.start_attempt("pa_1", d.AttemptTrigger.INVOICE_FINALIZED, CARD, T0)]
    succeeded_once = False
    emitted_success = 0
    for pick, status in steps:
        if p.is_open and len(attempts) < 3:
            attempts.append(
                p.start_attempt(f"pa_{len(attempts) + 1}", d.AttemptTrigger.ON_DEMAND, CARD, T0)
            )
        a = attempts[pick % len(attempts)]
        before = a.state
        outcome = p.apply(a, status, T0, DAYS)
        emitted_success += outcome is d.Outcome.SUCCEEDED
        if before is d.AttemptState.SUCCEEDED:
            assert a.state is d.AttemptState.SUCCEEDED
        succeeded_once = succeeded_once or p.state is d.PaymentState.SUCCEEDED
        if succeeded_once:
            assert p.state is d.PaymentState.SUCCEEDED
    assert emitted_success <= 1


@given(
    st.integers(0, 10_000),
    st.lists(st.tuples(st.sampled_from(list(d.RefundState)), st.integers(0, 5_000)), max_size=10),
)
def test_refundable_counts_pending_and_succeeded_never_failed(
    captured: int, refunds: list[tuple[d.RefundState, int]]
) -> None:
    left = d.refundable(captured, refunds)
    held = sum(a for s, a in refunds if s is not d.RefundState.FAILED)
    assert left == max(0, captured - held)
    assert 0 <= left <= captured


def test_after_failure_with_no_retries_is_final() -> None:
    assert d.after_failure(0, (), T0) == d.AfterFailure(None, 0, True)
    assert d.after_failure(0, (2,), T0) == d.AfterFailure(T0 + timedelta(days=2), 1, False)


def test_transition_tables_cover_every_state() -> None:
    assert set(states.PAYMENT_TRANSITIONS) == set(d.PaymentState)
    assert set(states.ATTEMPT_TRANSITIONS) == set(d.AttemptState)
    assert states.PAYMENT_TRANSITIONS[d.PaymentState.SUCCEEDED] == frozenset()
