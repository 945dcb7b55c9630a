"""Stripe objects to provider-neutral results, and the payments settings."""

from __future__ import annotations

import pytest

from services.kit.errors import StartupError
from services.payments.provider import provider_from_settings
from services.payments.provider.stripe_provider import charge_of, event_of
from services.payments.settings import PaymentsSettings


def test_payment_intent_statuses_map_to_outcomes() -> None:
    declined = charge_of(
        {
            "id": "pi_1",
            "status": "requires_payment_method",
            "last_payment_error": {"code": "card_declined", "message": "declined"},
            "metadata": {"tally_attempt_id": "pa_1"},
        }
    )
    assert (declined.status, declined.failure_code, declined.metadata["tally_attempt_id"]) == (
        "failed",
        "card_declined",
        "pa_1",
    )
    # Off-session 3-D Secure arrives as payment_failed, but it is an action, not a decline.
    auth = charge_of(
        {
            "id": "pi_2",
            "status": "requires_payment_method",
            "last_payment_error": {"code": "authentication_required"},
        }
    )
    assert auth.status == "requires_action"
    assert charge_of({"id": "pi_3", "status": "succeeded"}).status == "succeeded"
    assert charge_of({"id": "pi_4", "status": "processing"}).status == "processing"


def test_events_keep_what_payments_applies() -> None:
    refunded = event_of(
        {
            "id": "evt_1",
            "type": "charge.refunded",
            "created": 1_700_000_000,
            "data": {
                "object": {
                    "id": "ch_1",
                    "payment_intent": "pi_1",
                    "refunds": {
                        "data": [
                            {
                                "id": "re_1",
                                "amount": 300,
                                "status": "succeeded",
                                "metadata": {"tally_refund_id": "rf_1"},
                            }
                        ]
                    },
                }
            },
        }
    )
    assert refunded.payment_intent_id == "pi_1"
    assert [(r.provider_refund_id, r.amount_minor, r.status) for r in refunded.refunds] == [
        ("re_1", 300, "succeeded")
    ]
    other = event_of({"id": "evt_2", "type": "customer.created", "created": 1, "data": {}})
    assert (other.kind, other.charge) == ("customer.created", None)


def test_retry_days_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_DUNNING_RETRY_DAYS", "2, 4,8")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_x")
    s = PaymentsSettings()
    assert s.dunning_retry_days == (2, 4, 8)
    assert s.stripe_api_key is not None and s.stripe_api_key.get_secret_value() == "sk_test_x"


def test_missing_api_key_is_one_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STRIPE_API_KEY", "PAYMENTS_STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StartupError, match="STRIPE_API_KEY"):
        provider_from_settings(PaymentsSettings())
